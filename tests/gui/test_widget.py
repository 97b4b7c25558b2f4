"""The dock widget and its live preview in a real napari viewer (run under xvfb-run)."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
from main_thread import assert_callbacks_short, napari_step_limit, recording_callbacks
from patience import patience_ms

from napari_mutex_watershed import WatershedParameters, segment
from napari_mutex_watershed.errors import InvalidInputError
from napari_mutex_watershed.gui import callback_time
from napari_mutex_watershed.gui.parameter_widgets import OFFSETS_CUSTOM
from napari_mutex_watershed.gui.preview_panel import PREVIEW_LAYER_NAME
from napari_mutex_watershed.parameters import DEFAULT_MIN_SIZE, OFFSETS_2D, OFFSETS_3D

pytestmark = pytest.mark.gui

#: Seconds a preview may take on an idle machine (the first also starts the worker process);
#: waits give up after that, scaled for the load (``patience``).
PREVIEW_SECONDS = 20


def preview_layer(viewer):
    (layer,) = [layer for layer in viewer.layers if layer.name == PREVIEW_LAYER_NAME]
    return layer


def wait_for_new_result(qtbot, widget, previous=None, seconds=PREVIEW_SECONDS):
    qtbot.waitUntil(
        lambda: widget.preview_panel.last_result is not None
        and widget.preview_panel.last_result is not previous,
        timeout=patience_ms(seconds),
    )
    assert widget.inputs.message.value == "", widget.inputs.message.value
    return widget.preview_panel.last_result


def expected_labels(viewer, widget, parameters=None):
    """segment() on the crop the preview shows, computed here in the test process."""
    layer = viewer.layers["affinities"]
    region = widget.preview_panel.last_result.meta["region"]
    data = layer.data[0] if layer.multiscale else layer.data
    crop = np.asarray(data[(slice(None),) + region.slices])
    parameters = parameters or widget.inputs.parameters()
    return segment(crop, parameters)[region.shown_in_crop], region


def check_placement(viewer, region):
    """The preview's voxels sit on the affinities' voxels they were computed from."""
    affinities, preview = viewer.layers["affinities"], preview_layer(viewer)
    assert preview.data.shape == region.shown_shape
    for voxel in [(0,) * preview.ndim, tuple(n - 1 for n in preview.data.shape)]:
        np.testing.assert_allclose(
            preview.data_to_world(voxel),
            affinities.data_to_world((0, *np.add(voxel, region.shown_start)))[1:], atol=1e-9)


def check_first_preview(qtbot, viewer, widget):
    """Preview on: the first result equals the engine on its crop, placed on its voxels."""
    widget.preview_panel.preview.value = True
    qtbot.waitUntil(lambda: widget.preview_panel.last_result is not None,
                    timeout=patience_ms(PREVIEW_SECONDS))
    expected, region = expected_labels(viewer, widget)
    np.testing.assert_array_equal(preview_layer(viewer).data, expected)
    check_placement(viewer, region)


# -------------------------------------------------------------------------------- widget
def test_docks_through_the_manifest(viewer_with_widget):
    viewer, widget = viewer_with_widget
    assert widget.inputs.affinities.value.name == "affinities"
    assert widget.inputs.resolved_offsets() == (OFFSETS_3D, "")
    assert widget.inputs.message.value == ""
    # controls driven by the parameters model
    fields = WatershedParameters.model_fields
    slider = widget.inputs.fields["bias_short"]
    assert slider.label == fields["bias_short"].title
    assert slider.tooltip == fields["bias_short"].description
    assert (slider.min, slider.max, slider.step) == (0.0, 1.0, 0.01)
    assert slider.value == fields["bias_short"].default
    assert widget.inputs.fields["bias_long"].value == fields["bias_long"].default
    assert widget.inputs.fields["min_size"].value == DEFAULT_MIN_SIZE  # the CLI's too
    assert set(widget.inputs.fields) == set(fields) - {"offsets"}
    assert widget.inputs.parameters() == WatershedParameters(offsets=OFFSETS_3D)


def test_channel_offset_mismatch_is_a_message(viewer_with_widget, qtbot):
    viewer, widget = viewer_with_widget
    affinities = viewer.layers["affinities"].data
    viewer.add_image(affinities[:5], name="five channels")
    widget.inputs.affinities.value = viewer.layers["five channels"]
    message = widget.inputs.message.value
    assert "5 channels" in message and "6 offsets" in message
    assert widget.inputs.message.visible
    # the preview does not start, and nothing raises
    widget.preview_panel.preview.value = True
    qtbot.waitUntil(lambda: "paused" in widget.preview_panel.status.value, timeout=patience_ms(1))
    assert widget.preview_panel.last_result is None
    # custom offsets that fit clear the message
    widget.inputs.offsets_source.value = OFFSETS_CUSTOM
    widget.inputs.offsets_text.value = "1,0,0; 0,1,0; 0,0,1; 3,0,0; 0,9,0"
    assert widget.inputs.message.value == ""
    wait_for_new_result(qtbot, widget)


def test_chosen_channels_take_the_layers_offsets_for_them(viewer_with_widget, qtbot):
    """Channels 0, 1, 2 and 4 of six: the layer's offsets of those channels, no message and
    no offsets to type again (the widget said '4 channels for 6 offsets'), as the CLI does;
    typed (custom) offsets are those of the chosen channels."""
    viewer, widget = viewer_with_widget
    widget.inputs.fields["channels"].value = "0, 1, 2, 4"
    assert widget.inputs.message.value == ""
    chosen = [OFFSETS_3D[c] for c in (0, 1, 2, 4)]
    assert widget.inputs.parameters() == WatershedParameters(offsets=chosen,
                                                             channels=[0, 1, 2, 4])
    check_first_preview(qtbot, viewer, widget)
    widget.inputs.fields["channels"].value = "0, 1, 7"
    assert widget.inputs.message.value == (
        "channel 7 does not exist: the input has 6 channels (0 to 5)")
    widget.inputs.offsets_source.value = OFFSETS_CUSTOM
    widget.inputs.offsets_text.value = "1,0,0; 0,1,0; 0,0,1; 0,9,0"
    widget.inputs.fields["channels"].value = "0, 1, 2, 4"
    assert widget.inputs.parameters().offsets == chosen
    assert widget.inputs.message.value == ""


def test_loaded_channels_keep_the_layers_offsets(viewer_with_widget, tmp_path):
    """Saved with channels 0, 1, 2 and loaded again, the offsets stay the layer's (they
    turned 'custom', and channels 3, 4, 5 chosen next silently took (1,0,0), (0,1,0),
    (0,0,1)); a file naming channels and no offsets loads as the command takes it (it was
    'channels selects 3 channels for 6 offsets')."""
    from napari_mutex_watershed.gui.parameter_widgets import OFFSETS_FROM_LAYER

    _viewer, widget = viewer_with_widget
    inputs = widget.inputs
    inputs.fields["channels"].value = "0, 1, 2"
    inputs.save_parameters(tmp_path / "first.json")
    inputs.reset_parameters()
    inputs.load_parameters(tmp_path / "first.json")
    assert inputs.offsets_source.value == OFFSETS_FROM_LAYER
    inputs.fields["channels"].value = "3, 4, 5"
    assert inputs.parameters().offsets == list(OFFSETS_3D[3:])
    (tmp_path / "channels.json").write_text(json.dumps({"channels": [3, 4, 5],
                                                        "bias": [0.3, 0.4, 0.5]}))
    inputs.reset_parameters()
    inputs.load_parameters(tmp_path / "channels.json")
    assert inputs.parameters() == WatershedParameters(offsets=OFFSETS_3D[3:],
                                                      channels=[3, 4, 5], bias=[0.3, 0.4, 0.5])
    assert inputs.offsets_source.value == OFFSETS_FROM_LAYER and inputs.message.value == ""
    # a channel list that is not one is the file's problem, in one line (it was a TypeError)
    (tmp_path / "bad.json").write_text(json.dumps({"channels": 3}))
    with pytest.raises(InvalidInputError, match="channels"):
        inputs.load_parameters(tmp_path / "bad.json")


def test_a_result_with_the_layers_offsets_leaves_a_preset(viewer_with_widget):
    """Parameters whose offsets are the layer's for their channels switch the offsets back
    to the layer's: a preset left selected gave its own offsets to those channels."""
    from napari_mutex_watershed.gui.parameter_widgets import OFFSETS_FROM_LAYER

    viewer, widget = viewer_with_widget
    inputs = widget.inputs
    own = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 0, 0), (0, 4, 0), (0, 0, 4)]
    layer = viewer.layers["affinities"]
    layer.metadata = {**layer.metadata, "offsets": [list(o) for o in own]}
    inputs.offsets_source.value = next(v for v in inputs.offsets_source.choices
                                       if v not in (OFFSETS_FROM_LAYER, OFFSETS_CUSTOM))
    inputs.set_parameters(WatershedParameters(offsets=own[:5], channels=[0, 1, 2, 3, 4]))
    assert inputs.offsets_source.value == OFFSETS_FROM_LAYER
    assert inputs.parameters().offsets == own[:5]


def test_2d_affinities_use_the_2d_preset(make_napari_viewer_proxy, plugin_manager, qtbot):
    from napari_mutex_watershed.synthetic import sample_volume

    viewer = make_napari_viewer_proxy(show=True, ensure_main_thread=True)
    affinities, _, _ = sample_volume((96, 96))
    viewer.add_image(affinities, name="affinities")  # no offsets in the metadata
    _, widget = viewer.window.add_plugin_dock_widget("napari-mutex-watershed", "Mutex Watershed")
    try:
        assert widget.inputs.resolved_offsets()[0] == OFFSETS_2D
        assert "2D preset" in widget.inputs.message.value
        check_first_preview(qtbot, viewer, widget)
    finally:
        widget.close_preview()


def test_the_preview_sits_on_a_rotated_and_sheared_layer(make_napari_viewer_proxy,
                                                          plugin_manager, qtbot):
    from napari_mutex_watershed.synthetic import sample_volume

    viewer = make_napari_viewer_proxy(show=True, ensure_main_thread=True)
    affinities, _, offsets = sample_volume((96, 96))
    viewer.add_image(affinities, name="affinities", scale=(1, 2.0, 3.0), rotate=25,
                     shear=[0, 0, 0.4], metadata={"offsets": offsets})
    _, widget = viewer.window.add_plugin_dock_widget("napari-mutex-watershed", "Mutex Watershed")
    try:
        check_first_preview(qtbot, viewer, widget)
    finally:
        widget.close_preview()


def test_multiscale_seeds_and_deleted_preview(make_napari_viewer_proxy, plugin_manager, qtbot):
    """2D multiscale affinities: the preview computes on level 0 and follows seed edits."""
    from napari_mutex_watershed.synthetic import sample_volume

    viewer = make_napari_viewer_proxy(show=True, ensure_main_thread=True)
    affinities, _, offsets = sample_volume((128, 96))
    pyramid = [affinities, np.ascontiguousarray(affinities[:, ::2, ::2])]
    viewer.add_image(pyramid, name="affinities", multiscale=True, scale=(1, 2.0, 3.0),
                     translate=(0, 10.0, -4.0), metadata={"offsets": offsets})
    seeds = viewer.add_labels(np.zeros((128, 96), np.uint32), name="seeds",
                              scale=(2.0, 3.0), translate=(10.0, -4.0))
    _, widget = viewer.window.add_plugin_dock_widget("napari-mutex-watershed", "Mutex Watershed")
    try:
        widget.preview_panel.debounce_ms = 50
        widget.inputs.seeds.value = seeds
        widget.preview_panel.preview.value = True
        first = wait_for_new_result(qtbot, widget)
        expected, region = expected_labels(viewer, widget)
        expected = segment(affinities[(slice(None),) + region.slices], widget.inputs.parameters(),
                           seeds=seeds.data[region.slices])
        np.testing.assert_array_equal(preview_layer(viewer).data, expected)
        check_placement(viewer, region)

        # painting seeds (an in-place edit with a paint event) re-runs the preview
        y, x = region.start[0] + 20, region.start[1] + 20
        seeds.paint((y, x), 77, refresh=True)
        second = wait_for_new_result(qtbot, widget, first)
        assert preview_layer(viewer).data[20, 20] == 77
        expected = segment(affinities[(slice(None),) + region.slices], widget.inputs.parameters(),
                           seeds=seeds.data[region.slices])
        np.testing.assert_array_equal(preview_layer(viewer).data, expected)

        # a deleted preview layer comes back
        viewer.layers.remove(preview_layer(viewer))
        wait_for_new_result(qtbot, widget, second)
        assert preview_layer(viewer).data.shape == region.shown_shape
    finally:
        widget.close_preview()


# -------------------------------------------------------------------------------- preview
def test_preview_follows_bias_pan_and_slice(viewer_with_widget, qtbot):
    viewer, widget = viewer_with_widget
    camera = viewer.scene.camera
    viewer.dims.set_current_step(1, 30)
    camera.zoom = 4.0
    camera.center = (0, 60, 50)
    widget.preview_panel.preview.value = True
    first = wait_for_new_result(qtbot, widget)

    # the region is what the canvas shows around the camera centre, on the current slice
    height, width = viewer.canvas.size
    region = first.meta["region"]
    assert region.shown_start[0] == 30 and region.shown_shape[0] == 1
    assert region.start[0] == 30 - widget.preview_panel.context_slices.value
    assert region.start[1] == max(int(np.floor(60 - height / 8 - 0.5)) + 1, 0)
    assert region.stop[1] == min(int(np.ceil(60 + height / 8 + 0.5)), 128)
    assert region.start[2] == max(int(np.floor(50 - width / 8 - 0.5)) + 1, 0)
    assert region.stop[2] == min(int(np.ceil(50 + width / 8 + 0.5)), 128)
    expected, region = expected_labels(viewer, widget)
    np.testing.assert_array_equal(preview_layer(viewer).data, expected)
    check_placement(viewer, region)

    # a bias change recomputes the same crop
    widget.inputs.fields["bias_short"].value = 0.62
    second = wait_for_new_result(qtbot, widget, first)
    assert second.meta["parameters"].bias_short == pytest.approx(0.62)
    assert second.meta["region"] == first.meta["region"]
    expected, _ = expected_labels(viewer, widget, second.meta["parameters"])
    np.testing.assert_array_equal(preview_layer(viewer).data, expected)

    # panning moves the crop and the preview layer with it
    camera.center = (0, 80, 90)
    third = wait_for_new_result(qtbot, widget, second)
    assert third.meta["region"].start[1:] != second.meta["region"].start[1:]
    expected, region = expected_labels(viewer, widget)
    np.testing.assert_array_equal(preview_layer(viewer).data, expected)
    check_placement(viewer, region)

    # a new slice moves it in z
    viewer.dims.set_current_step(1, 12)
    fourth = wait_for_new_result(qtbot, widget, third)
    assert fourth.meta["region"].shown_start[0] == 12
    expected, region = expected_labels(viewer, widget)
    np.testing.assert_array_equal(preview_layer(viewer).data, expected)
    check_placement(viewer, region)
    # the preview layer shows on the current slice
    assert preview_layer(viewer).world_to_data(viewer.dims.point)[0] == pytest.approx(0)


def test_a_load_message_stays_while_the_preview_follows_the_view(viewer_with_widget, qtbot,
                                                                tmp_path, monkeypatch):
    """'Cannot load' stays while the preview follows a pan: the next preview result wiped
    it at once (only a failure of the preview's own is over when a preview succeeds)."""
    from qtpy.QtWidgets import QFileDialog

    viewer, widget = viewer_with_widget
    viewer.scene.camera.zoom = 4.0
    widget.preview_panel.preview.value = True
    first = wait_for_new_result(qtbot, widget)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    monkeypatch.setattr(QFileDialog, "getOpenFileName",
                        staticmethod(lambda *args, **kwargs: (str(bad), "")))
    widget.inputs._load_dialog()
    message = widget.inputs.message.value
    assert message.startswith(f"Cannot load {bad}") and widget.inputs.message.visible
    viewer.scene.camera.center = (0, 80, 90)  # a pan: a new preview, no input changed
    qtbot.waitUntil(lambda: widget.preview_panel.last_result is not first,
                    timeout=patience_ms(PREVIEW_SECONDS))
    assert widget.inputs.message.value == message


def test_a_preview_failure_is_over_when_a_preview_succeeds(viewer_with_widget, qtbot,
                                                            tmp_path, monkeypatch):
    """Its own failure (a NaN in view) the preview clears once the view moves off it; not a
    message shown after it (a file not loaded), which it wiped."""
    from qtpy.QtWidgets import QFileDialog

    viewer, widget = viewer_with_widget
    layer = viewer.layers["affinities"]
    layer.data = np.array(layer.data)  # a copy: the sample data is shared between tests
    layer.data[2, 30, 60, 50] = np.nan
    viewer.dims.set_current_step(1, 30)
    viewer.scene.camera.zoom = 16.0
    viewer.scene.camera.center = (0, 60, 50)
    panel = widget.preview_panel
    panel.preview.value = True
    qtbot.waitUntil(lambda: panel.status.value == "Preview failed",
                    timeout=patience_ms(PREVIEW_SECONDS))
    assert widget.inputs.message.value.startswith("Preview failed: affinities contain 1 NaN")
    viewer.scene.camera.center = (0, 20, 105)
    shown = wait_for_new_result(qtbot, widget)  # (and the message line is empty)

    viewer.scene.camera.center = (0, 60, 50)  # back on the NaN, then a file not loaded
    qtbot.waitUntil(lambda: panel.status.value == "Preview failed",
                    timeout=patience_ms(PREVIEW_SECONDS))
    (tmp_path / "bad.json").write_text("{not json")
    monkeypatch.setattr(QFileDialog, "getOpenFileName",
                        staticmethod(lambda *args, **kwargs: (str(tmp_path / "bad.json"), "")))
    widget.inputs._load_dialog()
    message = widget.inputs.message.value
    assert message.startswith("Cannot load")
    viewer.scene.camera.center = (0, 20, 105)
    qtbot.waitUntil(lambda: panel.last_result is not shown, timeout=patience_ms(PREVIEW_SECONDS))
    assert widget.inputs.message.value == message


def test_the_preview_follows_a_new_transform_of_the_layer(viewer_with_widget, qtbot):
    """A shear (or rotate, affine) set on the affinities layer moves the preview at once;
    it stayed where it was until the camera moved."""
    viewer, widget = viewer_with_widget
    check_first_preview(qtbot, viewer, widget)
    first = widget.preview_panel.last_result
    viewer.layers["affinities"].shear = [0, 0, 0, 0, 0, 0.2]
    shown = wait_for_new_result(qtbot, widget, first)
    check_placement(viewer, shown.meta["region"])


def test_the_preview_follows_data_edited_in_place(viewer_with_widget, qtbot):
    """Affinities changed in place (a new checkpoint written into the same array) and the
    layer refreshed, as napari asks: the preview segments the new values. It kept its
    cached crop of the old ones, through later parameter changes too."""
    viewer, widget = viewer_with_widget
    check_first_preview(qtbot, viewer, widget)
    first = widget.preview_panel.last_result
    layer = viewer.layers["affinities"]
    data = layer.data[0] if layer.multiscale else layer.data
    data[...] = 1.0 - np.asarray(data)
    layer.refresh()
    shown = wait_for_new_result(qtbot, widget, first)
    expected, _ = expected_labels(viewer, widget)
    np.testing.assert_array_equal(preview_layer(viewer).data, expected)
    widget.inputs.fields["bias_short"].value = 0.3
    shown = wait_for_new_result(qtbot, widget, shown)
    expected, _ = expected_labels(viewer, widget)
    np.testing.assert_array_equal(preview_layer(viewer).data, expected)
    # edited while hidden (napari refreshes nothing then), then shown again
    layer.visible = False
    data[...] = 1.0 - np.asarray(data)
    layer.refresh()
    layer.visible = True
    shown = wait_for_new_result(qtbot, widget, shown)
    expected, _ = expected_labels(viewer, widget)
    np.testing.assert_array_equal(preview_layer(viewer).data, expected)
    # shown when it was shown already (napari says "visible" on every set): nothing to redo
    requests = widget.preview_panel._request_id
    layer.visible = True
    qtbot.wait(3 * widget.preview_panel.debounce_ms)
    assert widget.preview_panel._request_id == requests


def test_newest_request_wins(viewer_with_widget, qtbot):
    viewer, widget = viewer_with_widget
    viewer.scene.camera.zoom = 3.0
    widget.preview_panel.preview.value = True
    first = wait_for_new_result(qtbot, widget)
    applied = []
    original = widget.preview_panel._apply

    def record(result):
        applied.append(result.id)
        original(result)

    widget.preview_panel._apply = record
    for value in (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65):
        widget.inputs.fields["bias_short"].value = value
        qtbot.wait(15)
    qtbot.waitUntil(lambda: widget.preview_panel.last_result.meta["parameters"].bias_short == 0.65,
                    timeout=patience_ms(PREVIEW_SECONDS))
    assert applied == sorted(applied)
    assert widget.preview_panel.last_result.id == widget.preview_panel._request_id
    expected, _ = expected_labels(viewer, widget)
    np.testing.assert_array_equal(preview_layer(viewer).data, expected)
    assert first.id < widget.preview_panel.last_result.id


def test_3d_preview_is_capped_and_placed(viewer_with_widget, qtbot):
    viewer, widget = viewer_with_widget
    viewer.layers["affinities"].translate = (0, 10, -5, 3)
    viewer.layers["affinities"].scale = (1, 2, 1, 1)
    viewer.reset_view()
    widget.preview_panel.max_box_3d.value = 40
    viewer.dims.ndisplay = 3
    widget.preview_panel.preview.value = True
    result = wait_for_new_result(qtbot, widget)
    region = result.meta["region"]
    assert region.shape == (40, 40, 40)
    assert region.shown_start == region.start
    expected, region = expected_labels(viewer, widget)
    np.testing.assert_array_equal(preview_layer(viewer).data, expected)
    check_placement(viewer, region)


def test_ui_stays_responsive_during_a_long_3d_preview(viewer_with_widget, qtbot):

    viewer, widget = viewer_with_widget
    widget.preview_panel.max_box_3d.value = 128  # the whole 64 x 128 x 128 sample: over a second
    viewer.dims.ndisplay = 3
    service = widget.preview_panel.service()  # start the workers before measuring
    qtbot.waitUntil(service.workers_ready, timeout=patience_ms(PREVIEW_SECONDS))
    qtbot.wait(500)

    with recording_callbacks() as records:
        widget.preview_panel.preview.value = True
        result = wait_for_new_result(qtbot, widget)

    assert result.compute_seconds > 0
    # the results were polled all along: the records cover a whole preview, however fast
    # the machine
    assert records["preview.poll"].calls >= 20
    # no callback of ours holds the main thread for 100 ms; napari adding the preview layer
    # (once, recorded apart) takes short steps under the same limit (gui.layers)
    assert_callbacks_short("a long 3D preview")
    adding = records["preview.add_layer"]
    assert adding.calls == 3 and adding.longest_cpu < napari_step_limit(), callback_time.table()


# -------------------------------------------------------------------------------- recovery
def test_crashed_worker_is_replaced(viewer_with_widget, qtbot):
    viewer, widget = viewer_with_widget
    widget.preview_panel.max_box_3d.value = 96
    viewer.dims.ndisplay = 3
    widget.preview_panel.preview.value = True
    service = widget.preview_panel.service()
    qtbot.waitUntil(lambda: service.busy_pid() is not None, timeout=patience_ms(PREVIEW_SECONDS))
    os.kill(service.busy_pid(), signal.SIGKILL)
    qtbot.waitUntil(lambda: "stopped unexpectedly" in widget.inputs.message.value,
                    timeout=patience_ms(PREVIEW_SECONDS))
    widget.preview_panel.max_box_3d.value = 32
    wait_for_new_result(qtbot, widget)
    assert preview_layer(viewer).data.shape == (32, 32, 32)


def test_hung_worker_is_replaced(make_napari_viewer_proxy, plugin_manager, sample_layers, qtbot):
    from napari_mutex_watershed.gui.widget import MutexWatershedWidget

    viewer = make_napari_viewer_proxy(show=True, ensure_main_thread=True)
    for data, kwargs, kind in sample_layers:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = MutexWatershedWidget(viewer, preview_timeout=0.3)
    viewer.window.add_dock_widget(widget)
    try:
        widget.preview_panel.max_box_3d.value = 64
        viewer.dims.ndisplay = 3
        widget.preview_panel.preview.value = True
        qtbot.waitUntil(lambda: "longer than 0.3 s" in widget.inputs.message.value,
                        timeout=patience_ms(PREVIEW_SECONDS))
        assert widget.preview_panel.service().restarts >= 1
        widget.preview_panel.service().timeout = 60
        widget.preview_panel.max_box_3d.value = 24
        wait_for_new_result(qtbot, widget)
        assert preview_layer(viewer).data.shape == (24, 24, 24)
    finally:
        widget.close_preview()


# -------------------------------------------------------------------------------- settings
def test_save_and_load_parameters(viewer_with_widget, tmp_path):
    _, widget = viewer_with_widget
    widget.inputs.fields["bias_short"].value = 0.33
    widget.inputs.fields["min_size"].value = 12
    widget.inputs.fields["strides"].value = "1, 3, 3"
    widget.inputs.fields["bias"].value = ""
    path = tmp_path / "run.json"
    widget.inputs.save_parameters(path)
    saved = WatershedParameters.load(path)
    assert saved.bias_short == pytest.approx(0.33) and saved.min_size == 12
    assert saved.strides == [1, 3, 3] and saved.offsets == OFFSETS_3D

    widget.inputs.reset_parameters()
    fields = widget.inputs.fields
    assert fields["bias_short"].value == 0.5 and fields["strides"].value == ""
    widget.inputs.load_parameters(path)
    assert widget.inputs.parameters() == saved

    other = saved.model_copy(update={"offsets": [(1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 0, 0),
                                                 (0, 5, 0), (0, 0, 5)]})
    other.save(path)
    widget.inputs.load_parameters(path)
    assert widget.inputs.offsets_source.value == OFFSETS_CUSTOM
    assert widget.inputs.parameters().offsets == other.offsets

    # a file that names no offsets keeps those in force, and may give a bias for each
    widget.inputs.offsets_text.value = "1,0,0; 0,1,0; 0,0,1"
    path.write_text(json.dumps({"bias": [0.4, 0.5, 0.6]}))
    widget.inputs.load_parameters(path)
    loaded = widget.inputs.parameters()
    assert loaded.offsets == [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
    assert loaded.bias == [0.4, 0.5, 0.6]


def test_values_are_remembered_between_sessions(make_napari_viewer_proxy, plugin_manager,
                                                sample_layers):
    from napari_mutex_watershed.gui.settings import settings_path
    from napari_mutex_watershed.gui.widget import MutexWatershedWidget

    viewer = make_napari_viewer_proxy(ensure_main_thread=True)
    viewer.add_image(sample_layers[0][0], **sample_layers[0][1])
    widget = MutexWatershedWidget(viewer)
    widget.inputs.fields["bias_long"].value = 0.81
    widget.inputs.fields["invert"].value = True
    widget.preview_panel.context_slices.value = 5
    widget.remember()
    stored = json.loads(settings_path().read_text())
    assert stored["parameters"]["bias_long"] == pytest.approx(0.81)

    again = MutexWatershedWidget(viewer)
    assert again.inputs.fields["bias_long"].value == pytest.approx(0.81)
    assert again.inputs.fields["invert"].value is True
    assert again.preview_panel.context_slices.value == 5
    # an unreadable settings file is ignored
    settings_path().write_text("{not json")
    fresh = MutexWatershedWidget(viewer)
    assert fresh.inputs.fields["bias_long"].value == 0.7


def test_removing_the_affinities_layer_leaves_no_panel_on_it(viewer_with_widget, qtbot):
    """The combo falls back without a change event of its own: every panel hears of it."""
    viewer, widget = viewer_with_widget
    layer = widget.inputs.affinities.value
    assert layer is not None and widget.full_run.inputs.layer is layer
    viewer.layers.remove(layer)
    assert widget.inputs.affinities.value is None
    assert widget.inputs.latest.layer is None and widget.full_run.inputs.layer is None
    assert not widget.full_run.start()  # nothing to run
    assert widget.full_run.job is None


def test_closing_the_dock_stops_every_process_while_the_widget_is_referred_to(
        viewer_with_widget, qtbot):
    """napari's close takes the widget out of its dock and deletes the dock alone; a console
    or a notebook holding the widget kept its processes running."""
    import psutil
    from patience import patience, wait_gone

    viewer, widget = viewer_with_widget  # (the fixture refers to the widget throughout)
    before = set(psutil.Process().children(recursive=True))
    widget.preview_panel.preview.value = True
    wait_for_new_result(qtbot, widget)
    widget.sweep_panel.run()
    qtbot.waitUntil(lambda: widget.sweep_panel.job is not None, timeout=patience_ms(20))
    started = set(psutil.Process().children(recursive=True)) - before
    assert started  # the preview's and the sweep's workers
    viewer.window.remove_dock_widget(widget.native)
    assert wait_gone(list(started), patience(20)) == []
    viewer.scene.camera.center = (0, 40, 40)  # no preview is asked for any more
    assert not widget.preview_panel._debounce.isActive()
    left = [p for p in set(psutil.Process().children(recursive=True)) - before
            if "resource_tracker" not in " ".join(p.cmdline())]  # (the stdlib's, for life)
    assert not left, [p.cmdline() for p in left]
