"""A blockwise result opened in napari (issue 20): through this plugin's reader and through
napari-ome-zarr, as a multiscale Labels layer at the right scale and place."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from cli_result import write_cli_result

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.attributes import PARAMETERS_ATTR

PLUGIN = "napari-mutex-watershed"
VOXEL, OFFSET = (8, 4, 4), (80, 40, 40)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return write_cli_result(tmp_path_factory.mktemp("napari_result"), 7, VOXEL, OFFSET,
                            units=["nm"] * 3)


def test_plugin_reader_gives_multiscale_labels_with_parameters(result):
    from napari_mutex_watershed.gui.reader import napari_get_reader

    path = result / "labels"
    ((data, kwargs, kind),) = napari_get_reader(str(path))(str(path))
    assert kind == "labels" and kwargs["multiscale"] is True
    assert [tuple(level.shape) for level in data] == [(24, 64, 64), (24, 32, 32), (12, 16, 16)]
    assert kwargs["scale"] == VOXEL and kwargs["translate"] == OFFSET
    assert kwargs["name"] == "labels"
    WatershedParameters.model_validate(kwargs["metadata"][PARAMETERS_ATTR])
    np.testing.assert_array_equal(np.asarray(data[0]),
                                  zarr.open_array(str(path / "0"), mode="r")[:])
    # the container opens the affinities and the labels; a level opens as the labels too
    kinds = {kw["name"]: k for _, kw, k in napari_get_reader(str(result))(str(result))}
    assert kinds == {"affinities": "image", "labels": "labels"}
    ((_, kwargs, kind),) = napari_get_reader(str(path / "0"))(str(path / "0"))
    assert kind == "labels" and kwargs["name"] == "labels" and kwargs["multiscale"]


@pytest.mark.gui
@pytest.mark.parametrize("plugin", [PLUGIN, "napari-ome-zarr"])
def test_napari_opens_the_result_as_multiscale_labels(make_napari_viewer_proxy, result,
                                                      plugin):
    viewer = make_napari_viewer_proxy(show=True, ensure_main_thread=True)
    layers = viewer.open(str(result / "labels"), plugin=plugin)
    (layer,) = [lay for lay in layers if lay._type_string == "labels"]
    assert layer.multiscale and len(layer.data) == 3
    np.testing.assert_allclose(layer.scale, VOXEL)
    if plugin == PLUGIN:
        np.testing.assert_allclose(layer.translate, OFFSET)
    else:  # napari-ome-zarr opens labels hidden (its choice) and leaves translation out
        assert not layer.visible
        layer.visible = True
    assert layer.data[0].shape == (24, 64, 64)
    screenshot = viewer.screenshot(canvas_only=True)
    assert len(np.unique(screenshot.reshape(-1, screenshot.shape[-1]), axis=0)) > 10
