"""The Preview section's state in a real napari (xvfb-run): its layer on top of the layer
list, messages recomputed when the inputs change, biases that do not act not recomputing."""

from __future__ import annotations

import numpy as np
import pytest
from patience import patience_ms

from napari_mutex_watershed.gui.parameter_widgets import OFFSETS_CUSTOM
from napari_mutex_watershed.gui.preview_panel import PREVIEW_LAYER_NAME

pytestmark = pytest.mark.gui

PREVIEW_SECONDS = 20  # a preview on an idle machine, the worker's start included


def start_preview(qtbot, widget):
    panel = widget.preview_panel
    panel.preview.value = True
    qtbot.waitUntil(lambda: panel.last_result is not None, timeout=patience_ms(PREVIEW_SECONDS))
    return panel


def test_the_preview_layer_stays_on_top_unless_moved(viewer_with_widget, qtbot):
    viewer, widget = viewer_with_widget
    panel = start_preview(qtbot, widget)
    def top():
        return viewer.layers[-1].name

    assert top() == PREVIEW_LAYER_NAME
    viewer.add_image(np.zeros((64, 128, 128), np.float32), name="added later")
    qtbot.waitUntil(lambda: top() == PREVIEW_LAYER_NAME, timeout=patience_ms(2))
    viewer.add_labels(np.zeros((64, 128, 128), np.uint8), name="labels added later")
    qtbot.waitUntil(lambda: top() == PREVIEW_LAYER_NAME, timeout=patience_ms(2))
    # the user puts it elsewhere: it stays there
    viewer.layers.move(viewer.layers.index(PREVIEW_LAYER_NAME), 0)
    viewer.add_image(np.zeros((64, 128, 128), np.float32), name="one more")
    qtbot.wait(100)
    assert viewer.layers[0].name == PREVIEW_LAYER_NAME and panel.preview_layer is not None


def test_preview_paused_clears_when_the_input_is_fixed(viewer_with_widget, qtbot):
    _viewer, widget = viewer_with_widget
    panel = start_preview(qtbot, widget)
    shown = panel.status.value
    assert shown.startswith("Preview of")
    inputs = widget.inputs
    inputs.offsets_source.value = OFFSETS_CUSTOM
    good = inputs.offsets_text.value
    inputs.offsets_text.value = "1,0,0; 0,1,0"  # 2 offsets for 6 channels
    qtbot.waitUntil(lambda: "paused" in panel.status.value, timeout=patience_ms(1))
    assert "6 channels" in panel.status.tooltip and "6 channels" in inputs.message.value
    requests = panel._request_id
    inputs.offsets_text.value = good  # back to what is shown: nothing to recompute
    qtbot.waitUntil(lambda: panel.status.value == shown, timeout=patience_ms(1))
    assert inputs.message.value == "" and panel._request_id == requests


def test_a_uniform_bias_disables_the_per_offset_biases(viewer_with_widget, qtbot):
    _viewer, widget = viewer_with_widget
    panel = start_preview(qtbot, widget)
    fields = widget.inputs.fields
    first = panel.last_result
    fields["bias"].value = "0.5"
    qtbot.waitUntil(lambda: panel.last_result is not first, timeout=patience_ms(PREVIEW_SECONDS))
    assert not fields["bias_short"].enabled and not fields["bias_long"].enabled
    requests = panel._request_id
    fields["bias_short"].value = 0.2  # (as a script could): it does not act, so no preview
    qtbot.wait(3 * panel.debounce_ms)
    assert panel._request_id == requests
    fields["bias"].value = ""
    assert fields["bias_short"].enabled and fields["bias_long"].enabled
    qtbot.waitUntil(lambda: panel._request_id > requests, timeout=patience_ms(1))


def test_a_parameter_change_is_sent_at_once_and_only_the_data_is_set(
    viewer_with_widget, qtbot
):
    """A new bias on the same data goes to the worker within the change (not after the
    window's repaint); the result replaces the layer's data without setting its unchanged
    scale and translate (each set re-slices the layer)."""
    viewer, widget = viewer_with_widget
    panel = start_preview(qtbot, widget)
    layer = viewer.layers[PREVIEW_LAYER_NAME]
    placed = []
    layer.events.scale.connect(placed.append)
    layer.events.translate.connect(placed.append)
    first, requests = panel.last_result, panel._request_id
    qtbot.wait(2 * panel.debounce_ms)  # quiet: a leading-edge change
    widget.inputs.fields["bias_short"].value = 0.45
    assert panel._request_id == requests + 1
    qtbot.waitUntil(lambda: panel.last_result is not first, timeout=patience_ms(PREVIEW_SECONDS))
    assert layer.data is panel.last_result.labels and placed == []


@pytest.mark.parametrize("shear, world", [(None, "(180, 50, 60)"), ([0, 0, 0, 0, 0, 0.5],
                                                                     "(180, 80, 60)")],
                         ids=["scaled", "sheared"])
def test_a_bad_value_is_named_in_the_layers_own_coordinates(
    make_napari_viewer_proxy, plugin_manager, qtbot, shear, world
):
    """The preview segments a crop of the layer; its message names the voxel of the whole
    layer and its world position (where napari puts that voxel, also on a sheared layer:
    it said (180, 50, 60) there), not the crop's voxel."""
    from napari_mutex_watershed.synthetic import sample_volume

    affinities, _, offsets = sample_volume((32, 64, 64), seed=4)
    z = 20
    affinities[2, z, 20, 30] = np.nan
    viewer = make_napari_viewer_proxy(show=True)
    layer = viewer.add_image(affinities, name="affinities", scale=(1, 4, 2, 2),
                             translate=(0, 100, 10, 0), shear=shear,
                             metadata={"offsets": [list(o) for o in offsets]})
    assert world == "(" + ", ".join(f"{v:g}" for v in layer.data_to_world((0, z, 20, 30))[1:]) + ")"
    viewer.dims.set_current_step(1, z)
    assert round(layer.world_to_data(viewer.dims.point)[1]) == z
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-mutex-watershed",
                                                         "Mutex Watershed")
    widget.inputs.affinities.value = layer
    panel = widget.preview_panel
    panel.preview.value = True
    qtbot.waitUntil(lambda: panel.status.value == "Preview failed",
                    timeout=patience_ms(PREVIEW_SECONDS))
    assert panel.current_region(layer).start[0] == z - panel.context_slices.value  # a crop
    assert (f"in channel 2, first at voxel (20, 20, 30), world position {world}"
            in panel.status.tooltip), panel.status.tooltip
    widget.close_preview()
