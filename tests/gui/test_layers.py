"""A Labels layer added in short main-thread steps (gui/layers.py), in a real viewer."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import zarr
from cli_result import write_cli_result
from main_thread import napari_step_limit, recording_callbacks
from patience import patience_ms

from napari_mutex_watershed.errors import InvalidInputError
from napari_mutex_watershed.gui import callback_time
from napari_mutex_watershed.gui.layers import add_labels_without_blocking
from napari_mutex_watershed.gui.run_layers import open_result

pytestmark = pytest.mark.gui

VOXEL, OFFSET = (2, 1, 1), (8, 0, 0)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """A real blockwise result: OME-Zarr labels with a pyramid, as a full run writes it."""
    return write_cli_result(tmp_path_factory.mktemp("arrival"), 3, VOXEL, OFFSET) / "labels"


@pytest.fixture
def viewer(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy(show=True, ensure_main_thread=True)
    viewer.add_image(np.zeros((24, 64, 64), np.float32), scale=VOXEL, translate=OFFSET)
    qtbot.wait(300)  # the viewer's first drawing is not the add
    return viewer


def test_a_result_arrives_in_short_main_thread_steps(viewer, result, qtbot):
    """Opened in a thread, then built hidden, inserted and shown in three turns of the event
    loop, none of which holds the main thread for LIMIT of CPU time (napari's one
    ``add_labels`` call held it 0.1-0.2 s: benchmarks/bench_layer_add.py)."""
    arrived, opened_on_main = [], []

    def open_levels():
        opened_on_main.append(threading.current_thread() is threading.main_thread())
        return open_result(result)

    with recording_callbacks() as records:
        arrival = add_labels_without_blocking(
            viewer, open_levels, record="test.add_layer", position=0, name="result",
            scale=VOXEL, translate=OFFSET, then=arrived.append)
        assert not arrival.done and "result" not in viewer.layers  # nothing added yet
        qtbot.waitUntil(lambda: bool(arrived), timeout=patience_ms(10))

    layer = arrived[0]
    assert opened_on_main == [False]
    assert arrival.done and arrival.layer is layer and layer in viewer.layers
    assert viewer.layers[0].name == "result"  # (the proxy viewer wraps what it returns)
    assert layer.visible and layer.multiscale and hasattr(layer.data[0], "dask")  # lazy
    np.testing.assert_allclose(layer.scale, VOXEL)
    np.testing.assert_allclose(layer.translate, OFFSET)
    np.testing.assert_array_equal(np.asarray(layer.data[0]),
                                  zarr.open_array(str(result / "0"), mode="r")[:])
    adding = records["test.add_layer"]
    assert adding.calls == 3, callback_time.table()
    assert adding.longest_cpu < napari_step_limit(), (
        f"a step of the add held the main thread {adding.longest_cpu * 1000:.0f} ms of CPU "
        f"time\n{callback_time.table()}")


def test_a_failed_open_is_reported_and_adds_nothing(viewer, qtbot):
    failures, arrived = [], []

    def refuse():
        raise InvalidInputError("not an output")

    arrival = add_labels_without_blocking(viewer, refuse, record="test.add_layer",
                                          name="result", then=arrived.append,
                                          failed=failures.append)
    qtbot.waitUntil(lambda: arrival.done, timeout=patience_ms(10))
    assert [str(error) for error in failures] == ["not an output"]
    assert not arrived and "result" not in viewer.layers


def test_a_cancelled_arrival_adds_nothing(viewer, qtbot):
    arrived = []
    arrival = add_labels_without_blocking(viewer, np.ones((24, 64, 64), np.uint32),
                                          record="test.add_layer", name="result",
                                          then=arrived.append)
    arrival.cancel()
    qtbot.wait(300)
    assert not arrived and "result" not in viewer.layers and arrival.layer is None


def test_the_layer_arrives_when_the_caller_keeps_no_reference(viewer, qtbot):
    import gc

    arrived = []
    add_labels_without_blocking(viewer, lambda: np.ones((24, 64, 64), np.uint32),
                                record="test.add_layer", name="result", then=arrived.append)
    gc.collect()
    qtbot.waitUntil(lambda: bool(arrived), timeout=patience_ms(10))
    assert arrived[0] in viewer.layers


def test_a_layer_is_read_from_its_file_only_while_it_shows_the_file(tmp_path):
    """The full run reads a layer's zarr in place only while the layer's data is that array
    as a reader opened it: data replaced (a processed copy, a flipped view) or a new layer
    given a copy of the metadata are the layer's own, which the run copies."""
    from types import SimpleNamespace

    import dask.array as da

    from napari_mutex_watershed.gui.reader import napari_get_reader
    from napari_mutex_watershed.gui.run_layers import zarr_source
    from napari_mutex_watershed.storage import write_affinities
    from napari_mutex_watershed.synthetic import sample_volume

    affinities, _, offsets = sample_volume((8, 32, 32), seed=1)
    path = write_affinities(tmp_path / "v.zarr/affinities", affinities, offsets)
    ((data, kwargs, _),) = napari_get_reader(str(path))(str(path))

    def layer(values):
        return SimpleNamespace(data=values, multiscale=False, metadata=kwargs["metadata"],
                               source=SimpleNamespace(path=None))

    assert zarr_source(layer(data)) == path
    assert zarr_source(layer(da.from_zarr(str(path)))) == path  # napari's own zarr reader
    for replaced in (data[..., ::-1], np.asarray(data) * 0.5, np.asarray(data)):
        assert zarr_source(layer(replaced)) is None


@pytest.mark.parametrize("image", ["image.ome.zarr", "plate.zarr/A/1/0"],
                         ids=["image at a container's root", "image in groups, as in a plate"])
def test_a_full_run_on_an_ome_zarr_image_goes_to_its_labels_group(tmp_path, image):
    """OME viewers list an image's labels from its ``labels`` group: the default output of a
    layer read from an OME-Zarr image goes there (it went inside the image group, or for an
    image in groups to the container's root), and ome-zarr-py then finds it as the image's
    label."""
    from types import SimpleNamespace

    import ome_zarr.io
    import ome_zarr.reader

    from napari_mutex_watershed import WatershedParameters
    from napari_mutex_watershed.blockwise.launch import segment_blockwise_zarr
    from napari_mutex_watershed.gui.reader import napari_get_reader
    from napari_mutex_watershed.gui.run_layers import default_output, zarr_source
    from napari_mutex_watershed.parameters import OFFSETS_3D
    from napari_mutex_watershed.synthetic import sample_volume

    affinities, _, _ = sample_volume((8, 32, 32), seed=1)
    path = tmp_path / image
    root = zarr.open_group(str(path), mode="w")
    root.create_array("s0", data=affinities, chunks=(6, 8, 16, 16))
    root.create_array("s1", data=affinities[:, :, ::2, ::2].copy(), chunks=(6, 8, 16, 16))
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "c", "type": "channel"}] + [
            {"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"],
        "datasets": [{"path": p, "coordinateTransformations": [
            {"type": "scale", "scale": s}]} for p, s in (("s0", [1, 4, 2, 2]),
                                                           ("s1", [1, 4, 4, 4]))]}]}
    ((data, kwargs, _),) = napari_get_reader(str(path))(str(path))
    layer = SimpleNamespace(data=data, multiscale=True, metadata=kwargs["metadata"],
                            source=SimpleNamespace(path=str(path)), name="image")
    assert zarr_source(layer) == path / "s0"
    output = default_output(layer)
    assert output == path / "labels/labels_mws"

    segment_blockwise_zarr(zarr_source(layer), output,
                           WatershedParameters(offsets=OFFSETS_3D), progress="none")
    nodes = list(ome_zarr.reader.Reader(ome_zarr.io.parse_url(str(path)))())
    labels = [n for n in nodes if any(type(s).__name__ == "Label" for s in n.specs)]
    assert [Path(str(n.zarr.path)).resolve() for n in labels] == [output.resolve()]


@pytest.mark.parametrize(("scale", "translate", "geometry"), [
    ((1, 4, 4, 4), (0, 10, 0, 0), ((4, 4, 4), (10, 0, 0))),  # (was unit voxels: 10 % 4)
    ((1, 4, 2, 2), (0, 8, -2, 0), ((4, 2, 2), (8, -2, 0))),
    ((1, 0.5, 1, 1), (0, 0, 0, 0), ((1, 1, 1), (0, 0, 0))),  # fractions: unit voxels
])
def test_a_full_run_writes_the_layer_s_whole_geometry(scale, translate, geometry):
    """An in-memory layer's input copy and output carry its scale and translate when they
    are whole numbers, so the output overlays the image when opened again later."""
    from types import SimpleNamespace

    from napari_mutex_watershed.gui.run_layers import world_geometry

    layer = SimpleNamespace(data=np.zeros((6, 4, 4, 4), np.float32), multiscale=False,
                            scale=np.asarray(scale, float), translate=np.asarray(translate, float))
    assert world_geometry(layer) == geometry


@pytest.mark.parametrize("container", ["low.zarr", "UP.ZARR"])
def test_a_zarr_container_in_any_case_is_read_in_place(tmp_path, container):
    """Affinities in UP.ZARR were taken for an in-memory layer: a full run first copied the
    whole volume into memory and then to the user's data folder."""
    from types import SimpleNamespace

    from napari_mutex_watershed.gui.reader import napari_get_reader
    from napari_mutex_watershed.gui.run_layers import default_output, zarr_source
    from napari_mutex_watershed.gui.writer import write_labels_zarr
    from napari_mutex_watershed.parameters import OFFSETS_3D
    from napari_mutex_watershed.storage import write_affinities

    path = write_affinities(tmp_path / container / "affinities",
                            np.zeros((6, 4, 8, 8), np.float32), OFFSETS_3D)
    ((data, kwargs, _),) = napari_get_reader(str(path))(str(path))
    layer = SimpleNamespace(data=data, multiscale=False, metadata=kwargs["metadata"],
                            source=SimpleNamespace(path=str(path)), name="affinities")
    assert zarr_source(layer) == path
    assert default_output(layer) == tmp_path / container / "labels_mws"
    (written,) = write_labels_zarr(str(tmp_path / f"seg{Path(container).suffix}"),
                                   np.ones((4, 8, 8), np.uint32), {"name": "seg"})
    assert written.endswith("/seg")
