"""Full blockwise runs from the widget: a real viewer (xvfb-run), the real CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import zarr
from main_thread import main_thread_ticks

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.attributes import COMPLETE_ATTR, PARAMETERS_ATTR
from napari_mutex_watershed.gui import run_job
from napari_mutex_watershed.storage import write_affinities
from napari_mutex_watershed.synthetic import sample_volume

PLUGIN = "napari-mutex-watershed"
WIDGET = "Mutex Watershed"

pytestmark = pytest.mark.gui

RUN_TIMEOUT = 90_000  # ms
SHAPE = (24, 64, 64)
BLOCKS = (12, 32, 32)
VOXEL_SIZE = (2, 1, 1)
OFFSET = (8, 0, 0)


def parameters_for(offsets) -> WatershedParameters:
    return WatershedParameters(offsets=offsets, bias_short=0.45, min_size=5)


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    """Runs on in-memory layers write below a temporary data directory."""
    monkeypatch.setenv(run_job.DATA_DIR_ENV, str(tmp_path / "data"))


@pytest.fixture(scope="module")
def cli_result(tmp_path_factory):
    """Sample affinities in zarr (voxel size 2,1,1, offset 8,0,0) and the CLI's result."""
    folder = tmp_path_factory.mktemp("cli")
    affinities, _, offsets = sample_volume(SHAPE)
    container = folder / "volume.zarr"
    write_affinities(container / "affinities", affinities, offsets, voxel_size=VOXEL_SIZE,
                     offset=OFFSET)
    parameters = parameters_for(offsets)
    parameters.save(folder / "parameters.json")
    result = subprocess.run(
        [sys.executable, "-m", "napari_mutex_watershed.cli", "segment",
         str(container / "affinities"), str(container / "labels_cli"),
         "--params", str(folder / "parameters.json"), "--workers", "2",
         "--block-size", *map(str, BLOCKS), "--progress", "none"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    labels = zarr.open_array(str(container / "labels_cli" / "0"), mode="r")[:]  # OME level 0
    return container, parameters, labels


def dock_widget(viewer):
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return widget


def wait_until_idle(qtbot, panel, timeout=RUN_TIMEOUT):
    qtbot.waitUntil(lambda: not panel.running, timeout=timeout)


def notifications(severity=None):
    from napari.utils.notifications import notification_manager

    return [n for n in notification_manager.records
            if severity is None or str(n.severity).lower().endswith(severity)]


def alive(processes) -> list:
    out = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                out.append(process)
        except psutil.NoSuchProcess:
            pass
    return out


# ---------------------------------------------------------------------------- tests
def test_full_run_equals_the_cli_and_keeps_the_ui_responsive(
    make_napari_viewer_proxy, plugin_manager, cli_result, qtbot
):

    container, parameters, expected = cli_result
    viewer = make_napari_viewer_proxy(show=True, ensure_main_thread=True)
    viewer.open(str(container / "affinities"), plugin=PLUGIN)
    widget = dock_widget(viewer)
    layer = viewer.layers["affinities"]
    widget.affinities.value = layer
    widget.set_parameters(parameters)
    panel = widget.full_run
    panel.block_size.value = ", ".join(map(str, BLOCKS))
    assert panel.workers.value == 2
    # a zarr-backed layer is read in place; the output goes beside it
    assert run_job.zarr_source(layer) == container / "affinities"
    assert panel.output.native.placeholderText() == str(container / "labels_mws")

    qtbot.wait(500)  # the first drawing of the viewer and the dock is not part of the run
    with main_thread_ticks() as (ticks, cpu):  # cpu: the main thread's CPU time, for diagnosis
        started = time.perf_counter()
        assert panel.start()
        assert panel.run_button.text == "Cancel"
        wait_until_idle(qtbot, panel)
    finished = time.perf_counter()

    job = panel.last_job
    assert job.returncode == 0, list(job.stderr_tail)
    assert job.command[4] == str(container / "affinities")  # no copy of zarr input
    assert not (container / run_job.INPUT_COPY_DIR).exists()
    assert panel.run_button.text == "Run"
    assert [m["phase"] for m in job.progress][-1] == "done"

    result = viewer.layers["labels_mws"]
    # the pyramid as a multiscale layer, lazy, backed by the zarr
    assert result is not None and result.multiscale and hasattr(result.data[0], "dask")
    np.testing.assert_array_equal(np.asarray(result.data[0]), expected)
    np.testing.assert_allclose(result.scale, VOXEL_SIZE)
    np.testing.assert_allclose(result.translate, OFFSET)
    assert WatershedParameters.model_validate(result.metadata[PARAMETERS_ATTR]) == parameters
    assert result.metadata[run_job.BLOCK_SIZE_KEY] == list(BLOCKS)
    assert zarr.open(str(container / "labels_mws")).attrs[COMPLETE_ATTR] is True

    # napari itself needs 0.15-0.4 s of main-thread time to add a Labels layer (vispy
    # visuals); the result layer is added once (when the first blocks are relabelled, then
    # only its data is refreshed): that call is the one pause allowed
    assert len(panel.layer_additions) == 1
    (add_start, add_end), = panel.layer_additions
    kept = [i for i, t in enumerate(ticks) if t <= finished]
    during = np.array([started] + [ticks[i] for i in kept])
    busy = np.diff(np.array([cpu[kept[0]]] + [cpu[i] for i in kept]))
    gaps = np.diff(during)
    excused = (during[:-1] <= add_end) & (during[1:] >= add_start)
    assert finished - started > 3.0, "the run was too quick to measure anything"
    assert len(during) > 100
    worst = int(np.argmax(np.where(excused, 0, gaps)))
    before = [m for m in job.progress if m["received"] <= during[worst + 1]]
    assert gaps[worst] < 0.100, (
        f"the UI froze for {gaps[worst] * 1000:.0f} ms ({busy[worst] * 1000:.0f} ms of it on "
        f"the main thread's CPU; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores), {during[worst] - started:.2f} s after Run (last progress: "
        f"{before[-1] if before else None}; the layer was added {add_start - started:.2f} s "
        f"after Run, taking {add_end - add_start:.2f} s)"
    )


def test_cancel_leaves_no_process_and_a_rerun_resumes(
    make_napari_viewer_proxy, plugin_manager, qtbot, monkeypatch, tmp_path
):
    from napari.utils import progress

    affinities, _, offsets = sample_volume((48, 96, 96), seed=1)
    viewer = make_napari_viewer_proxy(show=True, ensure_main_thread=True)
    layer = viewer.add_image(affinities, name="in memory",
                             metadata={"offsets": [list(o) for o in offsets]})
    widget = dock_widget(viewer)
    widget.affinities.value = layer
    panel = widget.full_run
    panel.block_size.value = "12, 24, 24"
    output = tmp_path / "data" / "runs" / "in_memory.zarr" / "labels_mws"
    assert panel.output_path() == output

    panel.run_button.native.click()  # Run
    qtbot.waitUntil(
        lambda: panel.job is not None and any(
            m["phase"] == "even" and m["done"] >= 4 for m in panel.job.progress),
        timeout=RUN_TIMEOUT,
    )
    # progress shows in the activity dock: a napari progress bar with the phase
    bars = [bar for bar in progress._all_instances if "Mutex watershed" in str(bar.desc)]
    assert bars and "even" in bars[0].desc and bars[0].total == 3 * 64 + 1
    job = panel.job
    root = psutil.Process(job.pid)
    family = [root, *root.children(recursive=True)]
    assert len(family) >= 3  # the CLI, the job, workers

    sent = time.perf_counter()
    panel.run_button.native.click()  # Cancel
    wait_until_idle(qtbot, panel, timeout=5_000)
    assert time.perf_counter() - sent < 2.0
    assert alive(family) == []
    assert job.cancel_requested and job.returncode is not None
    assert zarr.open(str(output)).attrs[COMPLETE_ATTR] is False
    info = [n.message for n in notifications("info")]
    assert any("cancelled" in m and "resume" in m for m in info), info
    assert "cancelled" in panel.run_status.value

    # the same run again: offered as a resume, finished blocks are skipped
    asked = []
    monkeypatch.setattr(panel, "confirm_resume",
                        lambda path, finished: asked.append((path, finished)) or "resume")
    monkeypatch.setattr(panel, "confirm_overwrite", lambda path: pytest.fail("not a resume"))
    assert panel.start()
    wait_until_idle(qtbot, panel)
    assert asked == [(output, False)]
    resumed = panel.last_job
    assert resumed.returncode == 0, list(resumed.stderr_tail)
    assert "--overwrite" not in resumed.command
    assert panel.request.copy_current  # the in-memory copy was reused, not rewritten
    skipped = max(m.get("skipped", 0) for m in resumed.progress if m["phase"] == "even")
    assert skipped >= 4
    assert zarr.open(str(output)).attrs[COMPLETE_ATTR] is True
    labels = np.asarray(viewer.layers["labels_mws"].data[0])
    assert labels.shape == affinities.shape[1:] and labels.max() > 0

    # other parameters: the existing output is not replaced without confirmation
    refused = []
    monkeypatch.setattr(panel, "confirm_overwrite", lambda path: refused.append(path) or False)
    widget.fields["bias_short"].value = 0.4
    panel.start()
    wait_until_idle(qtbot, panel, timeout=10_000)
    assert refused == [output]
    assert panel.last_job is resumed  # nothing was started
    assert "Not started" in panel.run_status.value


def test_job_error_is_a_notification_with_its_message(
    make_napari_viewer_proxy, plugin_manager, qtbot
):
    affinities, _, offsets = sample_volume((12, 32, 32), seed=2)
    affinities[:, 5, 10, 10] = np.nan
    viewer = make_napari_viewer_proxy(show=True, ensure_main_thread=True)
    layer = viewer.add_image(affinities, name="with nan",
                             metadata={"offsets": [list(o) for o in offsets]})
    widget = dock_widget(viewer)
    widget.affinities.value = layer
    panel = widget.full_run
    panel.block_size.value = "12, 32, 32"
    panel.max_retries = 0  # fail at the first try (the default retries twice)
    before = len(notifications("error"))
    assert panel.start()
    wait_until_idle(qtbot, panel)
    assert panel.last_job.returncode == 1
    errors = [n.message for n in notifications("error")[before:]]
    assert len(errors) == 1, errors
    message = errors[0]
    assert "NaN" in message and message.startswith("Mutex watershed run failed: even:")
    assert "\n" not in message and "Traceback" not in message
    assert panel.run_status.value.startswith("Failed:")
    assert panel.run_button.text == "Run"


def test_result_parameters_restore_into_the_widget(
    make_napari_viewer_proxy, plugin_manager, cli_result, qtbot
):
    container, parameters, _ = cli_result
    viewer = make_napari_viewer_proxy(show=True, ensure_main_thread=True)
    viewer.open(str(container / "affinities"), plugin=PLUGIN)
    widget = dock_widget(viewer)
    panel = widget.full_run
    assert widget.parameters() != parameters
    assert not panel.use_result.enabled
    (result,) = viewer.open(str(container / "labels_cli"), plugin=PLUGIN)
    viewer.layers.selection.active = result
    assert "carries the parameters" in panel.run_status.value
    assert panel.use_result.enabled
    panel.use_result.native.click()
    assert widget.parameters() == parameters
    assert panel.block_size.value == ", ".join(map(str, BLOCKS))


def test_cli_defaults_match():
    from napari_mutex_watershed.blockwise.launch import (
        DEFAULT_BLOCK_SIZE_2D,
        DEFAULT_BLOCK_SIZE_3D,
    )

    assert run_job.default_block_size(3) == DEFAULT_BLOCK_SIZE_3D
    assert run_job.default_block_size(2) == DEFAULT_BLOCK_SIZE_2D


def test_progress_bar_counts_interleaved_steps_without_going_back():
    # lines of two steps may interleave in the job's output: the bar never goes back
    tally = run_job.ProgressTally()
    assert tally.value() == (-1, -1) and tally.describe() == "starting"
    values = []
    for phase, done, total in [("even", 3, 8), ("odd", 0, 8), ("even", 5, 8),
                               ("odd", 2, 8), ("even", 8, 8), ("odd", 8, 8),
                               ("stitch", 0, 1), ("stitch", 1, 1), ("relabel", 4, 8),
                               ("relabel", 8, 8)]:
        tally.add({"phase": phase, "done": done, "total": total})
        values.append(tally.value()[0])
        if (phase, done) == ("odd", 2):
            assert tally.describe() == "even: 5/8 blocks, odd: 2/8 blocks"
        if (phase, done) == ("stitch", 0):
            assert tally.describe() == "stitching blocks"
    assert values == sorted(values) and values[0] == 3
    assert tally.value() == (24, 25) and tally.describe() == "relabel: 8/8 blocks"
    tally.add({"phase": "done", "done": 8, "total": 8})
    assert tally.value() == (25, 25) and tally.describe() == "done"
