"""Export of Labels layers: zarr (funlib.persistence) and TIFF, read back three ways."""

from __future__ import annotations

import json
import shutil

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.attributes import PARAMETERS_ATTR
from napari_mutex_watershed.errors import UnsafeOutputError
from napari_mutex_watershed.gui import writer
from napari_mutex_watershed.gui.reader import EXPORT_ATTR, napari_get_reader
from napari_mutex_watershed.gui.writer import (
    export_dtype,
    write_labels_tiff,
    write_labels_zarr,
)
from napari_mutex_watershed.storage import write_affinities

PLUGIN = "napari-mutex-watershed"
PARAMETERS = WatershedParameters(bias_short=0.42, min_size=7)


@pytest.fixture(scope="module")
def labels():
    rng = np.random.default_rng(0)
    # ids beyond 2**16 (mwatershed's ids are flat indices), uint64 like the kernel's output
    return (rng.integers(0, 50, (6, 20, 24)) * 99_991).astype(np.uint64)


def meta(name="seg", scale=(2.0, 1.0, 1.0), translate=(4.0, 0.0, 0.0)):
    return {"name": name, "scale": list(scale), "translate": list(translate),
            "metadata": {PARAMETERS_ATTR: json.loads(PARAMETERS.to_json())}}


# ---------------------------------------------------------------------------- functions
def test_zarr_export_has_funlib_metadata_and_parameters(tmp_path, labels):
    from funlib.persistence import open_ds

    (written,) = write_labels_zarr(str(tmp_path / "out.zarr"), labels, meta())
    assert written == str(tmp_path / "out.zarr" / "seg")
    array = open_ds(written)
    assert array.dtype == np.uint32
    assert tuple(array.voxel_size) == (2, 1, 1) and tuple(array.offset) == (4, 0, 0)
    assert list(array.axis_names) == ["z", "y", "x"]
    np.testing.assert_array_equal(array.to_ndarray(array.roi), labels)
    assert WatershedParameters.model_validate(array.attrs[PARAMETERS_ATTR]) == PARAMETERS
    assert array.attrs[EXPORT_ATTR]["layer"] == "seg"


def test_zarr_export_keeps_other_arrays_of_the_container(tmp_path, labels):
    container = tmp_path / "volume.zarr"
    write_affinities(container / "affinities", np.zeros((3,) + labels.shape, np.float32),
                     [(1, 0, 0), (0, 1, 0), (0, 0, 1)])
    write_labels_zarr(str(container), da.from_array(labels, chunks=(2, 20, 24)), meta())
    write_labels_zarr(str(container), labels[::-1].copy(), meta())  # replaces only "seg"
    layers = napari_get_reader(str(container))(str(container))
    kinds = {kwargs["name"]: kind for _data, kwargs, kind in layers}
    assert kinds == {"affinities": "image", "seg": "labels"}
    (seg,) = [data for data, kwargs, _ in layers if kwargs["name"] == "seg"]
    np.testing.assert_array_equal(np.asarray(seg), labels[::-1])


def test_tiff_export(tmp_path, labels):
    path = tmp_path / "seg.tif"
    write_labels_tiff(str(path), da.from_array(labels, chunks=(1, 20, 24)), meta())
    with tifffile.TiffFile(path) as tif:
        data = tif.asarray()
        description = tif.shaped_metadata[0]
    assert data.dtype == np.uint32
    np.testing.assert_array_equal(data, labels)
    assert description["axes"] == "ZYX" and description["scale"] == [2.0, 1.0, 1.0]
    assert WatershedParameters.model_validate(description[PARAMETERS_ATTR]) == PARAMETERS
    write_labels_tiff(str(tmp_path / "plane.tif"), labels[0], meta(scale=(1, 1),
                                                                   translate=(0, 0)))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "plane.tif"), labels[0])


def test_export_dtype():
    assert export_dtype(np.zeros(3, np.uint64)) == np.uint32
    assert export_dtype(np.array([0, 2**32], np.uint64)) == np.uint64  # does not fit
    assert export_dtype(np.array([-1, 3], np.int64)) == np.int64
    assert export_dtype(np.zeros(3, np.uint16)) == np.uint16
    assert export_dtype(da.zeros(3, dtype=np.int32)) == np.uint32
    with pytest.raises(ValueError, match="integers"):
        export_dtype(np.zeros(3, np.float32))


def test_non_integer_scale_falls_back_to_unit_voxels(tmp_path, labels):
    from funlib.persistence import open_ds

    (written,) = write_labels_zarr(str(tmp_path / "s.zarr"), labels,
                                   meta(scale=(0.5, 0.25, 0.25), translate=(1.0, 0, 0)))
    array = open_ds(written)
    assert tuple(array.voxel_size) == (1, 1, 1)
    assert array.attrs[EXPORT_ATTR]["scale"] == [0.5, 0.25, 0.25]  # the real scale, kept
    (layer,) = napari_get_reader(written)(written)  # and the plugin's reader applies it
    assert layer[1]["scale"] == (0.5, 0.25, 0.25) and layer[1]["translate"] == (1.0, 0, 0)
    # whole numbers, the offset not a multiple of the voxel: kept as they are (funlib,
    # OME-Zarr and napari take them; this was written in unit voxels)
    (written,) = write_labels_zarr(str(tmp_path / "t.zarr"), labels,
                                   meta(scale=(4, 4, 4), translate=(2, 0, 0)))
    array = open_ds(written)
    assert tuple(array.voxel_size) == (4, 4, 4) and tuple(array.roi.offset) == (2, 0, 0)
    (layer,) = napari_get_reader(written)(written)
    assert layer[1]["scale"] == (4, 4, 4) and layer[1]["translate"] == (2, 0, 0)


def files_of(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_zarr_export_replaces_only_an_earlier_export(tmp_path, labels):
    """An array at the path, or another tool's array under the layer's name, is refused
    with nothing changed; an earlier export is replaced."""
    zarr.create_array(str(tmp_path / "array.zarr"), data=labels[0].astype(np.uint32))
    group = zarr.open_group(str(tmp_path / "project.zarr"), mode="w")
    group.create_array("seg", data=np.ones((2, 3), np.float32))
    before = files_of(tmp_path)
    with pytest.raises(UnsafeOutputError, match="is an array, not a container"):
        write_labels_zarr(str(tmp_path / "array.zarr"), labels, meta())
    with pytest.raises(UnsafeOutputError, match="not a layer saved by this plugin"):
        write_labels_zarr(str(tmp_path / "project.zarr"), labels, meta())
    with pytest.raises(UnsafeOutputError, match="cannot go inside it"):
        write_labels_zarr(str(tmp_path / "array.zarr/inner.zarr"), labels, meta())
    assert files_of(tmp_path) == before


def test_an_export_saved_onto_itself_or_failing_keeps_its_data(tmp_path, labels,
                                                               monkeypatch):
    """Written beside and put in place once complete: a layer read lazily from an export and
    saved onto it keeps its labels, and a save that fails halfway leaves the export."""
    monkeypatch.setattr(writer, "SLAB_BYTES", labels[0].size * 4)  # a plane at a time
    (written,) = write_labels_zarr(str(tmp_path / "out.zarr"), labels, meta())
    lazy = da.from_zarr(zarr.open_array(written))  # as the reader opens it
    write_labels_zarr(str(tmp_path / "out.zarr"), lazy, meta())
    np.testing.assert_array_equal(zarr.open_array(written)[...], labels)
    # a save a kill interrupted leaves its hidden folder: the reader does not open it
    shutil.copytree(written, tmp_path / "out.zarr/.seg.0123.partial")
    names = [kwargs["name"] for _, kwargs, _ in napari_get_reader(
        str(tmp_path / "out.zarr"))(str(tmp_path / "out.zarr"))]
    assert names == ["seg"]
    shutil.rmtree(tmp_path / "out.zarr/.seg.0123.partial")

    class Failing:  # a layer whose data cannot be read past its first plane
        shape, dtype, ndim = labels.shape, np.dtype(np.uint32), labels.ndim
        reads = 0

        def __getitem__(self, index):
            self.reads += 1
            if self.reads > 1:
                raise OSError("the disk went away")
            return labels[index].astype(np.uint32)

    before = files_of(tmp_path)
    with pytest.raises(OSError, match="went away"):
        write_labels_zarr(str(tmp_path / "out.zarr"), Failing(), meta())
    assert files_of(tmp_path) == before
    with pytest.raises(OSError, match="went away"):
        write_labels_tiff(str(tmp_path / "seg.tif"), Failing(), meta())
    assert files_of(tmp_path) == before  # the export as it was, nothing partial left


def test_a_multiscale_layer_exports_its_level_0(tmp_path, labels):
    from napari.layers._multiscale_data import MultiScaleData

    pyramid = MultiScaleData([labels, labels[:, ::2, ::2]])
    (written,) = write_labels_zarr(str(tmp_path / "out.zarr"), pyramid,
                                   {**meta(), "multiscale": True})
    np.testing.assert_array_equal(zarr.open_array(written)[...], labels)
    write_labels_tiff(str(tmp_path / "seg.tif"), pyramid, meta())
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "seg.tif"), labels)


# ---------------------------------------------------------------------------- in napari
@pytest.mark.gui
def test_save_and_reopen_in_napari(make_napari_viewer_proxy, plugin_manager, tmp_path, labels):
    from funlib.persistence import open_ds

    viewer = make_napari_viewer_proxy(show=True, ensure_main_thread=True)
    layer = viewer.add_labels(labels, name="seg", scale=(2, 1, 1), translate=(4, 0, 0),
                              metadata={PARAMETERS_ATTR: json.loads(PARAMETERS.to_json())})
    viewer.layers.selection.active = layer

    # zarr through the manifest's writer
    saved = viewer.layers.save(str(tmp_path / "out.zarr"), selected=True, plugin=PLUGIN)
    assert saved == [str(tmp_path / "out.zarr" / "seg")]
    array = open_ds(saved[0])
    assert array.dtype == np.uint32 and tuple(array.voxel_size) == (2, 1, 1)
    np.testing.assert_array_equal(array.to_ndarray(array.roi), labels)
    (reopened,) = viewer.open(str(tmp_path / "out.zarr"), plugin=PLUGIN)
    assert reopened._type_string == "labels"
    np.testing.assert_array_equal(np.asarray(reopened.data), labels)
    np.testing.assert_allclose(reopened.scale, (2, 1, 1))
    np.testing.assert_allclose(reopened.translate, (4, 0, 0))
    assert WatershedParameters.model_validate(reopened.metadata[PARAMETERS_ATTR]) == PARAMETERS

    # TIFF through the manifest's writer, opened again by napari's builtin reader
    viewer.layers.selection.active = layer
    saved = viewer.layers.save(str(tmp_path / "seg.tif"), selected=True, plugin=PLUGIN)
    assert saved == [str(tmp_path / "seg.tif")]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "seg.tif"), labels)
    (from_tiff,) = viewer.open(str(tmp_path / "seg.tif"), plugin="napari")
    np.testing.assert_array_equal(np.asarray(from_tiff.data), labels)

    # a refusal is napari's error, with its message (a ValueError, napari would drop)
    zarr.create_array(str(tmp_path / "array.zarr"), data=labels[0].astype(np.uint32))
    viewer.layers.selection.active = layer
    with pytest.raises(UnsafeOutputError, match="is an array, not a container"):
        viewer.layers.save(str(tmp_path / "array.zarr"), selected=True, plugin=PLUGIN)
