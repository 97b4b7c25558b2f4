"""Full blockwise runs from the widget: a real viewer (xvfb-run), the real CLI as a subprocess."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest
import zarr
from main_thread import LIMIT, assert_callbacks_short, napari_step_limit, recording_callbacks
from patience import load_per_core, patience, patience_ms, wait_gone

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.attributes import BLOCK_SIZE_ATTR, COMPLETE_ATTR, PARAMETERS_ATTR
from napari_mutex_watershed.blockwise import run_outputs
from napari_mutex_watershed.gui import callback_time, full_run_panel, run_layers
from napari_mutex_watershed.gui.layers import level0
from napari_mutex_watershed.storage import write_affinities
from napari_mutex_watershed.synthetic import sample_volume

PLUGIN = "napari-mutex-watershed"
WIDGET = "Mutex Watershed"

pytestmark = pytest.mark.gui

RUN_SECONDS = 60  # a full run of these volumes on an idle machine takes well under this
SHAPE = (24, 64, 64)
BLOCKS = (12, 32, 32)
VOXEL_SIZE = (2, 1, 1)
OFFSET = (8, 0, 0)


def parameters_for(offsets) -> WatershedParameters:
    return WatershedParameters(offsets=offsets, bias_short=0.45, min_size=5)


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    """Runs on in-memory layers write below a temporary data directory."""
    monkeypatch.setenv(run_outputs.DATA_DIR_ENV, str(tmp_path / "data"))


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
        capture_output=True, text=True, timeout=patience(100),
    )
    assert result.returncode == 0, result.stderr
    labels = zarr.open_array(str(container / "labels_cli" / "0"), mode="r")[:]  # OME level 0
    return container, parameters, labels


def dock_widget(viewer):
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return widget


def widget_on_layer(make_napari_viewer_proxy, affinities, offsets, name, block_size):
    """A viewer with ``affinities`` as an in-memory layer ``name``, the widget docked on it
    and its full run set to ``block_size``: (viewer, widget, full run section)."""
    viewer = make_napari_viewer_proxy(show=True, ensure_main_thread=True)
    layer = viewer.add_image(affinities, name=name,
                             metadata={"offsets": [list(o) for o in offsets]})
    widget = dock_widget(viewer)
    widget.inputs.affinities.value = layer
    panel = widget.full_run
    panel.block_size.value = ", ".join(map(str, block_size))
    return viewer, widget, panel


def wait_until_idle(qtbot, panel, seconds=RUN_SECONDS):
    """Until the run (or its preparation) has ended and its result layer is in;
    ``seconds`` as on an idle machine."""
    qtbot.waitUntil(lambda: not panel.running and not panel.result_pending,
                    timeout=patience_ms(seconds))


def notifications(severity=None):
    from napari.utils.notifications import notification_manager

    return [n for n in notification_manager.records
            if severity is None or str(n.severity).lower().endswith(severity)]


# ---------------------------------------------------------------------------- tests
def test_a_session_s_first_run_imports_nothing_on_the_main_thread(tmp_path):
    """In a fresh session the first Run's checks imported the run's modules and zarr on the
    main thread (110 to 150 ms of CPU): the panel loads them in the background as it opens.
    A fresh process, since this one has imported them long ago."""
    script = tmp_path / "first_run.py"
    script.write_text(textwrap.dedent(f"""
        import time
        import napari
        from qtpy.QtWidgets import QApplication
        from napari_mutex_watershed.gui import callback_time
        from napari_mutex_watershed.synthetic import sample_volume

        viewer = napari.Viewer(show=False)
        affinities, _, offsets = sample_volume((16, 32, 32))
        viewer.add_image(affinities, name="affinities", metadata={{"offsets": offsets}})
        _, widget = viewer.window.add_plugin_dock_widget({PLUGIN!r}, {WIDGET!r})
        panel = widget.full_run
        panel.warmed.result(timeout=300)
        panel.output.value = {str(tmp_path / "o.zarr/labels")!r}
        callback_time.reset()
        assert panel.start()
        deadline = time.monotonic() + 300
        while (panel.running or panel.result_pending) and time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.01)
        name, record = callback_time.longest("full_run")
        print(name, record.longest_cpu, flush=True)
        viewer.close()
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=patience(120))
    name, cpu = done.stdout.split()
    assert float(cpu) < LIMIT, (name, cpu, done.stderr[-2000:])


def test_full_run_equals_the_cli_and_keeps_the_ui_responsive(
    make_napari_viewer_proxy, plugin_manager, cli_result, qtbot
):

    container, parameters, expected = cli_result
    viewer = make_napari_viewer_proxy(show=True, ensure_main_thread=True)
    viewer.open(str(container / "affinities"), plugin=PLUGIN)
    widget = dock_widget(viewer)
    layer = viewer.layers["affinities"]
    widget.inputs.affinities.value = layer
    widget.inputs.set_parameters(parameters)
    panel = widget.full_run
    panel.block_size.value = ", ".join(map(str, BLOCKS))
    assert panel.workers.value == 2
    # a zarr-backed layer is read in place; the output goes beside it
    assert run_layers.zarr_source(layer) == container / "affinities"
    assert panel.output.native.placeholderText() == str(container / "labels_mws")

    qtbot.wait(500)  # the first drawing of the viewer and the dock is not part of the run
    with recording_callbacks() as records:
        started = time.monotonic()
        assert panel.start()
        assert panel.run_button.text == "Cancel"
        wait_until_idle(qtbot, panel)
        run_seconds = time.monotonic() - started

    job = panel.last_job
    assert job.returncode == 0, list(job.stderr_tail)
    assert job.command[4] == str(container / "affinities")  # no copy of zarr input
    assert not (container / run_outputs.INPUT_COPY_DIR).exists()
    assert panel.run_button.text == "Run"
    assert [m["phase"] for m in job.progress][-1] == "done"

    result = viewer.layers["labels_mws"]
    # the pyramid as a multiscale layer, lazy, backed by the zarr
    assert result is not None and result.multiscale and hasattr(result.data[0], "dask")
    np.testing.assert_array_equal(np.asarray(result.data[0]), expected)
    np.testing.assert_allclose(result.scale, VOXEL_SIZE)
    np.testing.assert_allclose(result.translate, OFFSET)
    assert WatershedParameters.model_validate(result.metadata[PARAMETERS_ATTR]) == parameters
    assert result.metadata[BLOCK_SIZE_ATTR] == list(BLOCKS)
    assert zarr.open(str(container / "labels_mws")).attrs[COMPLETE_ATTR] is True

    # the result layer is added once (when the first blocks are relabelled, then only its
    # data is refreshed), in three short main-thread steps (gui.layers): napari's one
    # add_labels call held the main thread 0.1-0.2 s of CPU time here
    adding = records["full_run.add_layer"]
    assert adding.calls == 3, callback_time.table()
    assert adding.longest_cpu < napari_step_limit(), callback_time.table()
    # the job was polled all along (every poll_ms, 50 ms): a quarter of those ticks at least,
    # however busy the machine (the run is under a second on an idle one)
    ticks = run_seconds * 1000 / panel.poll_ms
    assert records["full_run.tick"].calls >= max(3, ticks / 4), (run_seconds, ticks)
    assert records["full_run.tick"].total_cpu > 0
    # the UI stays responsive: no callback of ours holds the main thread for 100 ms
    assert_callbacks_short("a full run")


def test_cancel_leaves_no_process_and_a_rerun_resumes(
    make_napari_viewer_proxy, plugin_manager, qtbot, monkeypatch, tmp_path
):
    from napari.utils import progress

    affinities, _, offsets = sample_volume((48, 96, 96), seed=1)
    viewer, widget, panel = widget_on_layer(make_napari_viewer_proxy, affinities, offsets,
                                            "in memory", (12, 24, 24))
    output = tmp_path / "data" / "runs" / "in_memory.zarr" / "labels_mws"
    assert panel.output_path() == output

    panel.run_button.native.click()  # Run
    qtbot.waitUntil(
        lambda: panel.job is not None and any(
            m["phase"] == "even" and m["done"] >= 4 for m in panel.job.progress),
        timeout=patience_ms(RUN_SECONDS),
    )
    # progress shows in the activity dock: a napari progress bar with the phase
    bars = [bar for bar in progress._all_instances if "Mutex watershed" in str(bar.desc)]
    assert bars and "even" in bars[0].desc and bars[0].total == 2 * 64 + 1
    job = panel.job
    root = psutil.Process(job.pid)
    family = [root, *root.children(recursive=True)]
    assert len(family) >= 3  # the CLI, the job, workers

    sent = time.perf_counter()
    panel.run_button.native.click()  # Cancel
    wait_until_idle(qtbot, panel, seconds=5)
    # SIGTERM, then SIGKILL after KILL_AFTER (1 s): ended within 2 s on an idle machine,
    # longer by the load (the timers fire late, the processes are scheduled late)
    took = time.perf_counter() - sent
    assert took < 2.0 * (1.0 + load_per_core()), f"cancel took {took:.1f} s"
    # every process of the job ends (killed processes vanish a moment after the signal)
    assert wait_gone(family, seconds=5) == []
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
    widget.inputs.fields["bias_short"].value = 0.4
    panel.start()
    wait_until_idle(qtbot, panel, seconds=10)
    assert refused == [output]
    assert panel.last_job is resumed  # nothing was started
    assert "Not started" in panel.run_status.value

    # Start over: the old result layer goes at once (it would show what is being replaced),
    # and the progress bar of the section counts the new run's steps
    old = viewer.layers["labels_mws"]
    monkeypatch.setattr(panel, "confirm_overwrite", lambda path: True)
    assert panel.start()
    qtbot.waitUntil(lambda: panel.job is not None, timeout=patience_ms(20))
    assert old not in viewer.layers
    bar = panel.progress.bar
    assert not bar.isHidden()  # (its section is folded: shown when unfolded)
    wait_until_idle(qtbot, panel)
    job = panel.last_job
    assert job.returncode == 0 and "--overwrite" in job.command
    blocks = next(m["total"] for m in job.progress if m["phase"] == "relabel")
    # steps: each block in its colour's step and in relabel, the stitch
    assert bar.maximum() == 2 * blocks + 1 and bar.value() > 0
    assert bar.isHidden() and panel.run_status.value.startswith("Done")


def test_job_error_is_a_notification_with_its_message(
    make_napari_viewer_proxy, plugin_manager, qtbot
):
    affinities, _, offsets = sample_volume((12, 32, 32), seed=2)
    affinities[:, 5, 10, 10] = np.nan
    viewer, _, panel = widget_on_layer(make_napari_viewer_proxy, affinities, offsets,
                                       "with nan", ())  # block size left empty
    viewer.layers["with nan"].scale = (1, 0.5, 2, 2)
    viewer.layers["with nan"].translate = (0, 3, 0, -5)
    before = len(notifications("error"))
    assert panel.start()
    wait_until_idle(qtbot, panel)
    assert panel.last_job.returncode == 1
    command = panel.last_job.command  # the empty field: the block the command chooses
    assert command[command.index("--block-size") + 1:][:3] == ["12", "32", "32"]
    errors = [n.message for n in notifications("error")[before:]]
    assert len(errors) == 1, errors
    message = errors[0]
    # an input error is never retried; its voxel is the layer's own (the copy is the layer)
    assert message.startswith("Mutex watershed run failed: affinities contain 1 NaN"), message
    # ... and its world position, from the layer's scale and translate
    assert "first at voxel (5, 10, 10), world position (5.5, 20, 15)" in message
    assert "\n" not in message and "Traceback" not in message
    assert panel.run_status.value.startswith("Failed:")
    assert panel.run_button.text == "Run"


#: Holds the lock of the output given as argv[1] (as a running CLI does) until its stdin
#: closes; says "locked" once it has it.
HOLDER = """
import sys
from napari_mutex_watershed.blockwise.launch import work_dir_for
from napari_mutex_watershed.blockwise.lock import RunLock
with RunLock(work_dir_for(sys.argv[1]), sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_output_in_use_is_refused_with_the_clis_line(
    make_napari_viewer_proxy, plugin_manager, qtbot, monkeypatch, tmp_path
):
    """A run on an output another process is writing is refused at once, with the CLI's
    one line in full (status, tooltip, notification): no dialog, nothing written."""
    affinities, _, offsets = sample_volume((12, 32, 32), seed=4)
    _, _, panel = widget_on_layer(make_napari_viewer_proxy, affinities, offsets, "busy",
                                  (12, 32, 32))
    output = panel.output_path()
    script = tmp_path / "hold_the_lock.py"
    script.write_text(HOLDER)
    holder = subprocess.Popen([sys.executable, str(script), str(output)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"  # (blocks until it holds it)
        monkeypatch.setattr(panel, "confirm_overwrite", lambda path: pytest.fail("asked"))
        monkeypatch.setattr(panel, "confirm_resume", lambda *args: pytest.fail("asked"))
        before = len(notifications("error"))

        # the widget sees the lock before anything else
        assert panel.start()
        wait_until_idle(qtbot, panel, seconds=10)
        assert panel.last_job is None  # no job was started
        assert not run_outputs.input_copy_path(output).exists()  # the layer was not copied
        line = f"{output} is in use by pid {holder.pid} ("
        assert line in panel.run_status.value and panel.run_status.value.startswith(
            "Not started:")
        assert panel.run_status.tooltip == panel.run_status.value
        status = panel.run_status.native  # every line of it shows (the label grows to fit)
        qtbot.waitUntil(lambda: status.width() > 0
                        and status.height() >= status.heightForWidth(status.width()),
                        timeout=patience_ms(2))
        errors = [n.message for n in notifications("error")[before:]]
        assert len(errors) == 1 and line in errors[0] and "\n" not in errors[0], errors

        # taken between that check and the job's start: the job refuses with the same line
        monkeypatch.setattr(full_run_panel, "output_in_use", lambda output: None)
        assert panel.start()
        wait_until_idle(qtbot, panel)
        job = panel.last_job
        assert job.returncode == 1, list(job.stderr_tail)
        assert job.error_message().startswith(line), list(job.stderr_tail)
        assert panel.run_status.value == f"Failed: {job.error_message()}"
        assert status.height() >= status.heightForWidth(status.width())
        errors = [n.message for n in notifications("error")[before:]]
        assert errors[-1] == f"Mutex watershed run failed: {job.error_message()}"
    finally:
        holder.stdin.close()
        holder.wait(timeout=patience(10))


def test_result_parameters_restore_into_the_widget(
    make_napari_viewer_proxy, plugin_manager, cli_result, qtbot
):
    container, parameters, _ = cli_result
    viewer = make_napari_viewer_proxy(show=True, ensure_main_thread=True)
    viewer.open(str(container / "affinities"), plugin=PLUGIN)
    widget = dock_widget(viewer)
    panel = widget.full_run
    assert widget.inputs.parameters() != parameters
    assert not panel.use_result.enabled
    (result,) = viewer.open(str(container / "labels_cli"), plugin=PLUGIN)
    viewer.layers.selection.active = result
    assert "carries the parameters" in panel.run_status.value
    assert panel.use_result.enabled
    panel.use_result.native.click()
    assert widget.inputs.parameters() == parameters
    assert panel.block_size.value == ", ".join(map(str, BLOCKS))


def test_cannot_run_is_recomputed_when_the_inputs_change(viewer_with_widget):
    _viewer, widget = viewer_with_widget
    panel, fields = widget.full_run, widget.inputs.fields
    fields["channels"].value = "0, 1, 2, 3, 4, 9"
    assert not panel.start() and panel.last_job is None
    assert panel.run_status.value == (
        "Cannot run: channel 9 does not exist: the input has 6 channels (0 to 5)")
    fields["bias"].value = "0.5, 0.6"
    fields["channels"].value = "0, 1, 2, 3"  # another problem: the text follows
    assert panel.run_status.value.startswith("Cannot run: ")
    assert "bias has 2 values for 4 offsets" in panel.run_status.value
    fields["bias"].value = ""  # the layer's offsets of those channels: nothing wrong
    assert panel.run_status.value == "Ready to run."
    assert panel.run_status.tooltip == panel.run_status.value


def test_mask_and_seeds_apply_to_the_full_run(make_napari_viewer_proxy, plugin_manager, qtbot,
                                              monkeypatch):
    affinities, _, offsets = sample_volume(SHAPE, seed=4)
    viewer, widget, panel = widget_on_layer(make_napari_viewer_proxy, affinities, offsets,
                                            "guided", BLOCKS)
    mask = np.zeros(SHAPE, np.uint8)
    mask[:, :, :40] = 1  # across the blocks' boundary at x = 32
    seeds = np.zeros(SHAPE, np.uint32)
    seeds[4:20, 20:24, 20:38] = 777  # one seed over four blocks
    widget.inputs.mask.value = viewer.add_labels(mask, name="mask")
    widget.inputs.seeds.value = viewer.add_labels(seeds, name="seeds")
    warnings = len(notifications("warning"))
    assert panel.start()
    wait_until_idle(qtbot, panel)
    job = panel.last_job
    assert job.returncode == 0, list(job.stderr_tail)
    output = panel.request.output
    for role in ("mask", "seeds"):
        copy = run_outputs.guide_copy_path(output, role)
        assert job.command[job.command.index(f"--{role}") + 1] == str(copy)
    assert len(notifications("warning")) == warnings  # (no "preview only" any more)
    labels = zarr.open_array(str(output / "0"), mode="r")[:]  # OME level 0
    assert not labels[mask == 0].any() and labels[mask > 0].max() > 0  # outside the mask: 0
    assert set(np.unique(labels[seeds == 777])) == {777}  # the seed: one object, its id
    # painting the seeds makes the old output another run's: nothing is reused silently
    asked = []
    monkeypatch.setattr(panel, "confirm_overwrite", lambda path: asked.append(path) or False)
    viewer.layers["seeds"].data = np.zeros_like(seeds)
    panel.start()
    wait_until_idle(qtbot, panel, seconds=10)
    assert asked == [output] and panel.last_job is job


def test_an_output_the_job_would_refuse_is_refused_before_any_dialog(
        make_napari_viewer_proxy, plugin_manager, qtbot, tmp_path, monkeypatch):
    """The input itself (or another tool's array) is never offered for replacing, and an
    output that is not in a .zarr container is refused before anything starts."""
    affinities, truth, offsets = sample_volume((8, 32, 32), seed=2)
    source = write_affinities(tmp_path / "v.zarr/affinities", affinities, offsets)
    zarr.create_array(str(tmp_path / "v.zarr/ground_truth"), data=truth)
    viewer = make_napari_viewer_proxy()
    viewer.open(str(source), plugin=PLUGIN)
    widget = dock_widget(viewer)
    panel = widget.full_run
    asked = []
    monkeypatch.setattr(panel, "confirm_overwrite", lambda path: asked.append(path) or True)
    for output, refusal in ((source, "is the input"),
                            (tmp_path / "v.zarr/ground_truth", "is not an output of")):
        panel.output.value = str(output)
        panel.start()
        qtbot.waitUntil(lambda: not panel.running, timeout=patience_ms(20))
        assert refusal in panel.run_status.value and panel.last_job is None
    assert asked == []
    panel.output.value = str(tmp_path / "o.n5/labels")
    assert not panel.start()
    assert "outputs are written into a .zarr container" in panel.run_status.value
    # places the job refuses whatever is there: said at once, before a dialog (a level was
    # offered for replacing first; a lock's name failed after the job started)
    from napari_mutex_watershed.blockwise.launch import segment_blockwise_zarr

    segment_blockwise_zarr(source, tmp_path / "v.zarr/seg", widget.inputs.parameters(),
                           progress="none")
    for name, refusal in (("seg/0", "is a level of the OME-Zarr image"),
                          ("seg/inner", "lies inside the labels image"),
                          ("seg.lock", "would keep its run files where another output's lock")):
        panel.output.value = str(tmp_path / "v.zarr" / name)
        assert not panel.start() and refusal in panel.run_status.value, name
    assert asked == [] and panel.last_job is None
    # an OME-Zarr image named as the output: its labels go in its labels group (they went
    # beside its levels, where OME viewers do not look); a container or our labels as named
    image = tmp_path / "image.zarr"
    zarr.open_group(str(image), mode="w").attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": n, "type": "space"} for n in "zyx"],
        "datasets": [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [1, 1, 1]}]}]}]}
    for named, place in ((image, image / "labels" / "labels_mws"),
                         (tmp_path / "new.zarr", tmp_path / "new.zarr" / "labels_mws"),
                         (tmp_path / "v.zarr/seg", tmp_path / "v.zarr/seg")):
        panel.output.value = str(named)
        assert panel.output_path() == place
    np.testing.assert_array_equal(zarr.open_array(str(source))[...], affinities)


def test_a_region_shorter_than_an_offset_cannot_run(make_napari_viewer_proxy, plugin_manager):
    """The preview drops offsets a crop is too short for; a run cannot, and says so before
    it starts (it failed after starting)."""
    affinities, _, offsets = sample_volume((3, 9, 9), seed=1)
    viewer = make_napari_viewer_proxy()
    viewer.add_image(affinities, name="tiny", metadata={"offsets": [list(o) for o in offsets]})
    panel = dock_widget(viewer).full_run
    assert not panel.start() and panel.last_job is None
    assert panel.run_status.value.startswith(
        "Cannot run: the region (3, 9, 9) is not longer than offset (3, 0, 0) along axis 0")


def test_a_run_into_another_output_adds_its_own_layer(make_napari_viewer_proxy, plugin_manager,
                                                      qtbot, tmp_path):
    """A second run into another output adds a layer of its own: it took over the first
    run's layer (still named after the first output, showing the second), so the first
    result left the viewer and a Start over on it kept a stale layer."""
    affinities, _, offsets = sample_volume((8, 32, 32), seed=3)
    viewer, widget, panel = widget_on_layer(make_napari_viewer_proxy, affinities, offsets,
                                            "affs", (8, 32, 32))
    outputs = {}
    for name, bias in (("first", 0.5), ("second", 0.3)):
        widget.inputs.fields["bias_short"].value = bias
        outputs[name] = tmp_path / "o.zarr" / name
        panel.output.value = str(outputs[name])
        assert panel.start()
        wait_until_idle(qtbot, panel)
        assert panel.last_job.returncode == 0, list(panel.last_job.stderr_tail)
    for name, output in outputs.items():
        (layer,) = [layer for layer in viewer.layers if layer.name == name]
        np.testing.assert_array_equal(np.asarray(level0(layer)),
                                      zarr.open_array(str(output / "0"))[...])
    assert not np.array_equal(zarr.open_array(str(outputs["first"] / "0"))[...],
                              zarr.open_array(str(outputs["second"] / "0"))[...])
    # the first output opened again with the reader (the labels, a level): a Start over
    # on it removes those too (they stayed, with the replaced run's parameters)
    viewer.open(str(outputs["first"]), plugin=PLUGIN)
    viewer.open(str(outputs["first"] / "0"), plugin=PLUGIN)
    assert len(viewer.layers) == 5
    panel.result.remove(outputs["first"])  # a Start over on the first
    assert [layer.name for layer in viewer.layers] == ["affs", "second"]
