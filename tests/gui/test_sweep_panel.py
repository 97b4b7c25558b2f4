"""The Sweep section in a real napari viewer (run under xvfb-run)."""

from __future__ import annotations

import csv

import numpy as np
import psutil
import pytest
from main_thread import assert_callbacks_short, napari_step_limit, recording_callbacks
from napari.layers._source import Source
from patience import patience_ms, wait_gone

from napari_mutex_watershed import segment
from napari_mutex_watershed.errors import UnsafeOutputError
from napari_mutex_watershed.gui import callback_time
from napari_mutex_watershed.sweep import score

pytestmark = pytest.mark.gui

#: Seconds a sweep may take on an idle machine (the first also starts the worker
#: processes); waits give up after that, scaled for the load (``patience``).
SWEEP_SECONDS = 30


@pytest.fixture
def panel(viewer_with_widget, qtbot):
    """The Sweep section of the docked main widget; workers stopped at the end."""
    viewer, widget = viewer_with_widget
    widget.sections["Sweep"].set_expanded(True)  # (folded at first: its table laid out)
    panel = widget.sweep_panel
    yield viewer, widget, panel
    panel.close_sweep()


def wait_for_sweep(qtbot, panel, seconds=SWEEP_SECONDS):
    qtbot.waitUntil(lambda: panel.job is not None and panel.job.done and not panel.running
                    and not panel.removing, timeout=patience_ms(seconds))
    assert panel.job.error is None, panel.job.error


def test_sweep_scores_ranks_and_applies_the_best(panel, qtbot, tmp_path):
    from qtpy.QtCore import Qt

    viewer, widget, panel = panel
    viewer.dims.set_current_step(1, 30)
    viewer.scene.camera.zoom = 5.0
    viewer.scene.camera.center = (0, 64, 64)
    assert panel.ground_truth.value.name == "ground truth"  # preselected
    # as if read from a file (the reader's layers carry their source)
    source = tmp_path / "affinities.zarr"
    source.mkdir()
    (source / "zarr.json").write_text("{}")
    viewer.layers["affinities"]._source = Source(path=str(source))
    panel.bias_values.value = "0.25, 0.5, 0.75"
    assert panel.run() is True
    assert panel.running and panel.cancel_button.enabled
    wait_for_sweep(qtbot, panel)

    # one layer per setting, named by it, in grid order, placed like the preview
    names = [layer.name for layer in panel.layers()]
    assert names == ["sweep bias=0.25", "sweep bias=0.50", "sweep bias=0.75"]
    region = widget.preview_panel.current_region()
    affinities = viewer.layers["affinities"]
    crop = np.asarray(affinities.data[(slice(None),) + region.slices])
    truth = viewer.layers["ground truth"].data
    shown = tuple(slice(a, b) for a, b in zip(region.shown_start, region.shown_stop))
    expected_error = {}
    for layer, bias in zip(panel.layers(), (0.25, 0.5, 0.75)):
        parameters = widget.inputs.parameters().model_copy(update={"bias": bias})
        labels = segment(crop, parameters)[region.shown_in_crop]
        np.testing.assert_array_equal(layer.data, labels)
        np.testing.assert_allclose(layer.scale, affinities.scale[1:])
        np.testing.assert_allclose(layer.translate, np.asarray(affinities.translate[1:])
                                   + np.asarray(region.shown_start))
        expected_error[bias] = score(labels, truth[shown]).adapted_rand_error
    # the widget does not offer sweep layers as mask / seeds / ground truth
    for combo in (panel.ground_truth, widget.inputs.mask, widget.inputs.seeds):
        offered = [layer.name for layer in combo.choices if layer is not None]
        assert "ground truth" in offered
        assert not [name for name in offered if name.startswith("sweep")]

    # the table: one row per setting, the best (lowest adapted Rand error) highlighted
    table = panel.table
    assert table.rowCount() == 3
    best_bias = min(expected_error, key=lambda b: (expected_error[b], b))
    assert panel.best_result.setting.value("bias") == best_bias
    assert panel.best_result.adapted_rand_error == pytest.approx(expected_error[best_bias])
    row = panel.table.row_of(panel.best_result.setting.index)
    assert table.item(row, 0).font().bold()
    assert table.item(row, 1).text() == f"bias={best_bias:.2f}"
    assert table.item(row, 0).text() == "1"
    assert "best" in panel.status.value and f"bias={best_bias:.2f}" in panel.status.value
    # only the best result shows: the others are hidden, not covering it
    assert [layer.visible for layer in panel.layers()] == [
        bias == best_bias for bias in (0.25, 0.5, 0.75)]
    # every column fits the panel's width: nothing to scroll to, the setting column the rest
    qtbot.waitUntil(lambda: table.viewport().width() > 0, timeout=patience_ms(1))
    widths = [table.columnWidth(c) for c in range(table.columnCount())]
    assert table.horizontalHeader().length() <= table.viewport().width(), widths
    assert table.columnWidth(1) >= 60 and table.horizontalScrollBar().maximum() == 0

    # sortable: by adapted Rand error descending, the best row is last
    table.sortItems(2, Qt.SortOrder.DescendingOrder)
    assert table.item(table.rowCount() - 1, 1).text() == f"bias={best_bias:.2f}"
    errors = [float(table.item(r, 2).text()) for r in range(table.rowCount())]
    assert errors == sorted(errors, reverse=True)

    # Apply copies the best row's parameters into the main widget
    assert widget.inputs.parameters().bias is None
    table.clearSelection()
    applied = panel.apply()
    assert applied is panel.best_result
    assert widget.inputs.parameters().bias == pytest.approx(best_bias)
    assert widget.inputs.fields["bias"].value == str(best_bias)
    # ... and disables the per-offset biases the uniform bias replaces
    assert not widget.inputs.fields["bias_short"].enabled
    assert not widget.inputs.fields["bias_long"].enabled
    # ... or any selected row
    table.selectRow(0)
    assert panel.apply().setting.value("bias") != best_bias
    assert [layer.visible for layer in panel.layers()] == [  # the selected row's layer
        layer.metadata["sweep_index"] == panel.selected_result().setting.index
        for layer in panel.layers()]
    assert widget.inputs.parameters().bias == pytest.approx(
        panel.selected_result().setting.value("bias"))

    # the table as CSV
    path = panel.save_csv(tmp_path / "sweep.csv")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["setting"] == f"bias={best_bias:.2f}"
    assert float(rows[0]["adapted_rand_error"]) == pytest.approx(expected_error[best_bias])
    # ... with sweep --csv's checks: never into what the sweep read, nor over another file
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for target in (source / "zarr.json", notes):
        with pytest.raises(UnsafeOutputError):
            panel.save_csv(target)
    assert (source / "zarr.json").read_text() == "{}" and notes.read_text() == "mine"
    assert panel.save_csv(path) == path  # an earlier table is replaced

    # grid view is napari's grid mode, both ways
    panel.grid_view.value = True
    assert viewer.canvas.grid.enabled
    assert all(layer.visible for layer in panel.layers())  # a cell each
    qtbot.wait(200)
    viewer.canvas.grid.enabled = False
    assert panel.grid_view.value is False

    # a result kept with napari's Duplicate Layer is the user's: offered as an input, and
    # neither replaced by the next sweep nor removed with its layers (the copy carries the
    # metadata; it was deleted with them)
    from napari.layers._layer_actions import _duplicate_layer

    viewer.layers.selection = {panel.layers()[0]}
    _duplicate_layer(viewer.layers)
    kept = next(layer for layer in viewer.layers if layer.name.endswith(" copy"))
    kept.name = "my kept segmentation"
    for combo in (panel.ground_truth, widget.inputs.mask, widget.inputs.seeds):
        combo.reset_choices()
        assert kept in combo.choices
    assert kept not in panel.layers()

    # a new sweep replaces the layers; min size joins the names
    panel.bias_values.value = "0.5"
    panel.min_size_values.value = "0, 20"
    panel.run()
    wait_for_sweep(qtbot, panel)
    assert [layer.name for layer in panel.layers()] == [
        "sweep bias=0.50 min_size=0", "sweep bias=0.50 min_size=20"]
    assert len([layer for layer in viewer.layers if layer.name.startswith("sweep")]) == 2
    assert kept in viewer.layers
    panel.remove_layers()
    qtbot.waitUntil(lambda: not panel.removing, timeout=patience_ms(5))
    assert not [layer for layer in viewer.layers if layer.name.startswith("sweep")]
    assert kept in viewer.layers


def test_problems_are_messages(panel, qtbot):
    viewer, widget, panel = panel
    panel.bias_values.value = "0.5, 1.5"
    assert panel.run() is False
    assert "1.50" in panel.status.value
    panel.bias_values.value = "0.9:0.1:0.1"
    assert panel.run() is False and "start <= stop" in panel.status.value
    panel.bias_values.value = "0.5"
    viewer.add_labels(np.zeros((10, 10, 10), np.uint32), name="small")
    panel.ground_truth.value = viewer.layers["small"]
    assert panel.run() is False and "shape" in panel.status.value
    # without ground truth: shown, not scored
    panel.ground_truth.value = None
    assert panel.run() is True
    wait_for_sweep(qtbot, panel)
    assert panel.best_result is None and "not scored" in panel.status.value
    assert panel.table.item(0, 2).text() == "-"


def test_ui_stays_responsive_during_a_sweep(panel, qtbot):
    """From Run until every result is a layer and a table row, with 2 workers computing, no
    callback of ours holds the main thread for 100 ms.

    napari's own work of adding the result layers (recorded apart, as "sweep.add_layer") is
    split into short steps too (``gui.layers.add_labels_without_blocking``): each under the
    same limit of main-thread CPU time on an idle machine (``napari_step_limit``), where
    napari's one call took 0.1-0.2 s.
    """

    viewer, widget, panel = panel
    # a 2D view of the whole 64 x 128 x 128 sample with 31 context slices on each side:
    # seconds of computing per setting, one-slice result layers
    viewer.dims.set_current_step(1, 32)
    widget.preview_panel.context_slices.value = 31
    panel.bias_values.value = "0.4, 0.6"
    panel.workers.value = 2
    warm_up_workers(qtbot, panel, widget)

    with recording_callbacks() as records:
        assert panel.run()
        wait_for_sweep(qtbot, panel)

    region = panel._meta["region"]
    assert region.shape[0] == 63 and region.shown_shape[0] == 1
    assert len(panel.layers()) == 2 and panel.table.rowCount() == 2
    # the workers were polled all along: the records cover the whole sweep, however fast
    # the machine
    assert records["sweep.poll"].calls >= 10
    adding = records["sweep.add_layer"]
    assert adding.calls == 2 * 3, callback_time.table()  # build, insert, show
    assert adding.longest_cpu < napari_step_limit(), callback_time.table()
    assert_callbacks_short("a sweep")


def warm_up_workers(qtbot, panel, widget):
    """Start the worker processes before measuring (as the widget's test does)."""
    sweeper = panel.sweeper()
    parameters = widget.inputs.parameters().model_copy(update={"offsets": [(1, 0, 0), (0, 1, 0),
                                                                    (0, 0, 1)]})
    task = {"affinities": np.zeros((3, 4, 4, 4), np.float32), "ground_truth": None,
            "mask": None, "seeds": None, "parameters": parameters.to_json()}
    warm = [sweeper.submit(task) for _ in range(panel.workers.value)]
    qtbot.waitUntil(lambda: all(f.done() for f in warm), timeout=patience_ms(SWEEP_SECONDS))


def test_cancel_stops_the_workers(panel, qtbot):
    viewer, widget, panel = panel
    widget.preview_panel.max_box_3d.value = 128
    viewer.dims.ndisplay = 3
    panel.bias_values.value = "0.3, 0.5, 0.7, 0.9"
    panel.workers.value = 2
    panel.run()
    sweeper = panel.sweeper()
    qtbot.waitUntil(lambda: len(sweeper.worker_pids()) == 2,
                    timeout=patience_ms(SWEEP_SECONDS))
    workers = [psutil.Process(pid) for pid in sweeper.worker_pids()]
    panel.cancel()
    qtbot.waitUntil(lambda: not panel.running, timeout=patience_ms(SWEEP_SECONDS))
    assert "cancelled" in panel.status.value
    assert panel.run_button.enabled and not panel.cancel_button.enabled
    assert wait_gone(workers, seconds=10) == []


#: A sweep shown in 2D, the view switched to 3D, its layers removed: in a process of its
#: own, since napari crashed there (under Xvfb) when a hidden layer was shown after a shown
#: one had been removed.
REMOVAL_IN_3D = """
import sys, time
import napari
from qtpy.QtWidgets import QApplication

def wait(condition, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end and not condition():
        QApplication.processEvents()
        time.sleep(0.01)

viewer = napari.Viewer()
viewer.open_sample("napari-mutex-watershed", "cells3d")
_, widget = viewer.window.add_plugin_dock_widget("napari-mutex-watershed", "Mutex Watershed")
panel = widget.sweep_panel
panel.bias_values.value = "0.3, 0.5, 0.7"
panel.run()
wait(lambda: panel.job is not None and panel.job.done and not panel.running, float(sys.argv[1]))
assert len(panel.layers()) == 3, panel.status.value
viewer.dims.ndisplay = 3
wait(lambda: False, 0.5)
panel.remove_layers()
wait(lambda: not panel.removing, float(sys.argv[1]))
print([layer.name for layer in viewer.layers])
panel.close_sweep()
viewer.close()
"""


def test_sweep_layers_are_removed_in_3d(tmp_path):
    import subprocess
    import sys

    from patience import patience

    done = subprocess.run([sys.executable, "-c", REMOVAL_IN_3D, str(patience(SWEEP_SECONDS))],
                          capture_output=True, text=True, cwd=tmp_path,
                          timeout=patience(4 * SWEEP_SECONDS))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "['affinities', 'ground truth']"
