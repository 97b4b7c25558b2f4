"""The reader (zarr, OME-Zarr, N5, HDF5) and the sample data contribution."""

from __future__ import annotations

import gzip
import json

import dask.array as da
import numpy as np
import pytest
import zarr
from patience import patience_ms

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.attributes import PARAMETERS_ATTR
from napari_mutex_watershed.gui.preview_panel import PREVIEW_LAYER_NAME
from napari_mutex_watershed.gui.reader import napari_get_reader
from napari_mutex_watershed.gui.sample_data import sample_cells
from napari_mutex_watershed.parameters import OFFSETS_3D
from napari_mutex_watershed.storage import write_affinities, write_labels

OFFSETS = [list(o) for o in OFFSETS_3D]


@pytest.fixture(scope="module")
def affinities():
    rng = np.random.default_rng(0)
    return rng.random((6, 10, 24, 20), dtype=np.float32)


def read(path):
    reader = napari_get_reader(str(path))
    assert callable(reader), f"no reader for {path}"
    return reader(str(path))


def test_zarr_container_with_affinities_and_labels(tmp_path, affinities):
    container = tmp_path / "volume.zarr"
    write_affinities(container, affinities, OFFSETS_3D, voxel_size=(4, 2, 2), offset=(40, 20, 20))
    parameters = WatershedParameters(bias_short=0.42)
    labels = np.arange(10 * 24 * 20, dtype=np.uint32).reshape(10, 24, 20)
    write_labels(container, labels, voxel_size=(4, 2, 2), offset=(40, 20, 20),
                 attributes={PARAMETERS_ATTR: parameters.to_json()})

    (data, kwargs, kind), (labels_data, labels_kwargs, labels_kind) = read(container)
    assert kind == "image" and isinstance(data, da.Array)  # lazy
    np.testing.assert_array_equal(np.asarray(data), affinities)
    assert kwargs["metadata"]["offsets"] == OFFSETS
    assert kwargs["scale"] == (1, 4, 2, 2) and kwargs["translate"] == (0, 40, 20, 20)
    assert kwargs["name"] == "affinities"

    assert labels_kind == "labels"
    np.testing.assert_array_equal(np.asarray(labels_data), labels)
    stored = labels_kwargs["metadata"][PARAMETERS_ATTR]
    assert WatershedParameters.model_validate(stored) == parameters

    # each array can be opened on its own too
    ((_, kwargs, kind),) = read(container / "affinities")
    assert kind == "image" and kwargs["metadata"]["offsets"] == OFFSETS
    ((_, _, kind),) = read(container / "labels")
    assert kind == "labels"


def test_a_sample_container_opens_with_its_ground_truth(tmp_path):
    """What ``napari-mutex-watershed sample`` wrote, and a run's labels beside it (the
    ground truth was left out: not written by a run)."""
    from napari_mutex_watershed.blockwise.launch import segment_blockwise_zarr
    from napari_mutex_watershed.synthetic import write_sample

    write_sample(tmp_path / "s.zarr", (8, 32, 32))
    segment_blockwise_zarr(tmp_path / "s.zarr/affinities", tmp_path / "s.zarr/labels",
                           WatershedParameters(offsets=OFFSETS_3D), progress="none")
    layers = [(kwargs["name"], kind) for _, kwargs, kind in read(tmp_path / "s.zarr")]
    assert layers == [("affinities", "image"), ("ground_truth", "labels"), ("labels", "labels")]


def test_ome_zarr_multiscale(tmp_path, affinities):
    path = tmp_path / "image.ome.zarr"
    root = zarr.open_group(str(path), mode="w")
    root.create_array("0", data=affinities, chunks=(6, 5, 12, 10))
    root.create_array("1", data=affinities[:, :, ::2, ::2].copy(), chunks=(6, 5, 12, 10))
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"
    ]
    root.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [{
            "axes": axes,
            "datasets": [
                {"path": "0", "coordinateTransformations": [
                    {"type": "scale", "scale": [1, 4, 2, 2]},
                    {"type": "translation", "translation": [0, 8, 0, 6]}]},
                {"path": "1", "coordinateTransformations": [
                    {"type": "scale", "scale": [1, 4, 4, 4]},
                    {"type": "translation", "translation": [0, 8, 1, 7]}]},
            ],
        }],
    }
    root.attrs["offsets"] = OFFSETS
    ((data, kwargs, kind),) = read(path)
    assert kind == "image" and kwargs["multiscale"] is True and len(data) == 2
    np.testing.assert_array_equal(np.asarray(data[0]), affinities)
    assert kwargs["scale"] == (1, 4, 2, 2) and kwargs["translate"] == (0, 8, 0, 6)
    assert kwargs["metadata"]["offsets"] == OFFSETS
    # its unit, for napari's scale bar and status (it said pixels)
    assert kwargs["units"] == ("pixel", "nanometer", "nanometer", "nanometer")


def write_n5(path, array, block, attributes):
    """A minimal N5 writer (gzip), as Java N5 / z5 lay datasets out."""
    path.mkdir(parents=True)
    (path.parent / "attributes.json").write_text(json.dumps({"n5": "2.0.0"}))
    (path / "attributes.json").write_text(json.dumps({
        "dimensions": list(array.shape[::-1]), "blockSize": list(block[::-1]),
        "dataType": str(array.dtype), "compression": {"type": "gzip", "level": 1},
        **attributes,
    }))
    for index in np.ndindex(*[-(-n // b) for n, b in zip(array.shape, block)]):
        chunk = array[tuple(slice(i * b, (i + 1) * b) for i, b in zip(index, block))]
        header = np.array([0, chunk.ndim], ">u2").tobytes()
        header += np.array(chunk.shape[::-1], ">u4").tobytes()
        file = path.joinpath(*(str(i) for i in index[::-1]))
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(header + gzip.compress(chunk.astype(chunk.dtype.newbyteorder(">"))
                                                .tobytes()))


def test_n5(tmp_path, affinities):
    container = tmp_path / "volume.n5"
    write_n5(container / "affinities", affinities, (6, 4, 16, 16),
             {"offsets": OFFSETS, "resolution": [2, 2, 4], "offset": [20, 20, 40]})
    for path in (container, container / "affinities"):
        ((data, kwargs, kind),) = read(path)
        assert kind == "image" and isinstance(data, da.Array)
        np.testing.assert_array_equal(np.asarray(data), affinities)
        assert kwargs["metadata"]["offsets"] == OFFSETS
        assert kwargs["scale"] == (1, 4, 2, 2) and kwargs["translate"] == (0, 40, 20, 20)


def test_hdf5_file(tmp_path, affinities, make_napari_viewer_proxy, plugin_manager):
    """napari checks that a path exists before a reader sees it, so a dataset inside an
    HDF5 file cannot be named: the file opens its affinities, else its volumes."""
    import h5py

    labels = np.arange(10 * 24 * 20, dtype=np.uint32).reshape(10, 24, 20) % 7
    with h5py.File(tmp_path / "volumes.h5", "w") as handle:
        handle["volumes/affs"] = affinities
        handle["volumes/affs"].attrs.update({"offsets": OFFSETS, "resolution": [4, 2, 2]})
        handle["volumes/gt"] = labels
        handle["volumes/gt"].attrs["resolution"] = [4, 2, 2]
        handle["notes"] = np.zeros(3)  # not a volume
    layers = {kwargs["name"]: (data, kwargs, kind)
              for data, kwargs, kind in read(tmp_path / "volumes.h5")}
    assert sorted(layers) == ["affs", "gt"]
    assert layers["affs"][2] == "image" and layers["gt"][2] == "labels"
    assert layers["affs"][1]["metadata"]["offsets"] == OFFSETS
    assert layers["affs"][1]["scale"] == (1, 4, 2, 2)
    np.testing.assert_array_equal(np.asarray(layers["gt"][0]), labels)
    with h5py.File(tmp_path / "one.h5", "w") as handle:
        handle["affinities"] = affinities
        handle["other"] = labels
    assert [kwargs["name"] for _, kwargs, _ in read(tmp_path / "one.h5")] == ["affinities"]
    (tmp_path / "one.h5").rename(tmp_path / "ONE.H5")  # any case (it was not read)
    assert [kwargs["name"] for _, kwargs, _ in read(tmp_path / "ONE.H5")] == ["affinities"]

    viewer = make_napari_viewer_proxy()
    opened = viewer.open(str(tmp_path / "volumes.h5"), plugin="napari-mutex-watershed")
    assert sorted(layer.name for layer in opened) == ["affs", "gt"]


def test_affinities_without_axes_get_a_channel_axis(tmp_path, affinities):
    """As the command reads them: four axes of floats, or an offsets attribute (2D here)."""
    zarr.create_array(str(tmp_path / "plain.zarr"), data=affinities)
    flat = zarr.create_array(str(tmp_path / "flat.zarr"), data=affinities[:2, 0])
    flat.attrs["offsets"] = [[1, 0], [0, 1]]
    zarr.create_array(str(tmp_path / "raw.zarr"), data=affinities[0])  # a 3D image: no channel
    for path, labels in (("plain.zarr", ("c", "z", "y", "x")), ("flat.zarr", ("c", "y", "x")),
                         ("raw.zarr", ("z", "y", "x"))):
        ((_, kwargs, kind),) = read(tmp_path / path)
        assert kind == "image" and kwargs["axis_labels"] == labels, path
    # offsets stored as one flat list: read as affinities without offsets (a TypeError)
    flat.attrs["offsets"] = [1, 0, 0, 1]
    ((_, kwargs, kind),) = read(tmp_path / "flat.zarr")
    assert kind == "image" and "offsets" not in kwargs["metadata"]


def test_not_ours(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "image.tif").write_bytes(b"")
    (tmp_path / "empty.zarr").mkdir()
    assert napari_get_reader(str(tmp_path / "plain")) is None
    assert napari_get_reader(str(tmp_path / "image.tif")) is None
    assert napari_get_reader(str(tmp_path / "empty.zarr")) is None
    assert napari_get_reader([str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")]) is None
    group = zarr.open_group(str(tmp_path / "project.zarr"), mode="w")
    group.create_array("raw", data=np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="open one of its arrays directly: raw"):
        read(tmp_path / "project.zarr")


def test_sample_cells():
    (affinities, kwargs, kind), (labels, labels_kwargs, labels_kind) = sample_cells()
    assert kind == "image" and kwargs["name"] == "affinities"
    assert affinities.shape == (6, 64, 128, 128)
    assert kwargs["metadata"]["offsets"] == OFFSETS
    assert labels_kind == "labels" and labels_kwargs["name"] == "ground truth"
    assert labels.shape == (64, 128, 128)


# ------------------------------------------------------------------------------- in napari
@pytest.mark.gui
def test_open_and_preview_in_napari(tmp_path, affinities, make_napari_viewer_proxy,
                                    plugin_manager, qtbot):
    container = tmp_path / "volume.zarr"
    write_affinities(container, affinities, OFFSETS_3D, voxel_size=(4, 2, 2), offset=(40, 20, 20))
    viewer = make_napari_viewer_proxy(show=True)
    viewer.open(str(container), plugin="napari-mutex-watershed")
    layer = viewer.layers["affinities"]
    assert layer.metadata["offsets"] == OFFSETS
    _, widget = viewer.window.add_plugin_dock_widget("napari-mutex-watershed", "Mutex Watershed")
    try:
        assert widget.inputs.message.value == ""
        viewer.dims.set_point(1, 40 + 4 * 6)
        widget.preview_panel.preview.value = True
        qtbot.waitUntil(lambda: widget.preview_panel.last_result is not None,
                        timeout=patience_ms(10))
        assert widget.inputs.message.value == ""
        region = widget.preview_panel.last_result.meta["region"]
        assert region.shown_start[0] == 6
        preview = viewer.layers[PREVIEW_LAYER_NAME]
        np.testing.assert_allclose(preview.scale, (4, 2, 2))
        np.testing.assert_allclose(
            preview.translate, np.array([40, 20, 20]) + np.array([4, 2, 2]) * region.shown_start
        )
    finally:
        widget.close_preview()


@pytest.mark.gui
def test_open_sample_through_the_manifest(make_napari_viewer_proxy, plugin_manager):
    viewer = make_napari_viewer_proxy()
    viewer.open_sample("napari-mutex-watershed", "cells3d")
    assert [layer.name for layer in viewer.layers] == ["affinities", "ground truth"]
    assert viewer.layers["affinities"].metadata["offsets"] == OFFSETS
