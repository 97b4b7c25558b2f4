"""Export of Labels layers: zarr (funlib.persistence) and TIFF, read back three ways."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import tifffile

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.attributes import PARAMETERS_ATTR
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
