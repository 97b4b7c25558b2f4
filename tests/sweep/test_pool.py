"""Settings in worker processes: masks and seeds, failures, killed workers, an orphaned pool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
from patience import patience, wait_gone

from napari_mutex_watershed import WatershedParameters, segment
from napari_mutex_watershed.sweep import (
    Sweeper,
    SweepInputs,
    best,
    parameter_grid,
    run_sweep,
    score,
)


# ------------------------------------------------------------------------------ the grid
def test_shown_part_mask_and_seeds(sample_3d):
    """Labels and scores cover the shown part of the crop (a slice in napari's 2D view)."""
    affinities, truth, offsets = sample_3d
    crop = affinities[:, 4:11]
    shown = (slice(3, 4), slice(None), slice(None))
    mask = np.ones(crop.shape[1:], bool)
    mask[:, :10] = False
    seeds = np.zeros(crop.shape[1:], np.uint32)
    seeds[3, 30, 30] = 99
    settings = parameter_grid(WatershedParameters(offsets=offsets), bias=[0.5])
    (result,) = run_sweep(crop, settings, truth[7:8], shown=shown, mask=mask, seeds=seeds,
                          workers=0)
    full = segment(crop, settings[0].parameters, mask=mask, seeds=seeds)
    np.testing.assert_array_equal(result.labels, full[shown])
    assert result.labels[0, 30, 30] == 99 and not result.labels[0, :10].any()
    assert result.scores == score(full[shown], truth[7:8])
    assert result.n_segments == len(np.unique(full[shown])) - 1


def test_failed_setting_is_reported(sample_2d):
    affinities, truth, offsets = sample_2d
    bad = parameter_grid(WatershedParameters(offsets=offsets + [(3, 3)]), bias=[0.5])
    (result,) = run_sweep(affinities, bad, truth, workers=1)
    assert result.error and "channel" in result.error
    assert best([result]) is None


def test_a_bad_value_is_named_in_the_whole_layer(sample_3d):
    """A NaN met in the crop is named by the layer's voxel and its world position."""
    affinities, _, offsets = sample_3d
    crop = affinities[:, 4:11].copy()
    crop[1, 2, 3, 4] = np.nan
    settings = parameter_grid(WatershedParameters(offsets=offsets), bias=[0.5])
    inputs = SweepInputs(crop, origin=(4, 0, 0), scale=(40.0, 4.0, 4.0),
                         translate=(100.0, 0.0, 0.0))
    with Sweeper(workers=1) as sweeper:
        (result,) = sweeper.start(inputs, settings).wait(timeout=patience(30))
    assert "channel 1, first at voxel (6, 3, 4), world position (340, 12, 16)" in result.error


def test_idle_workers_exit_by_themselves_when_the_sweeper_closes(sample_3d):
    """Not killed: a killed pool worker leaves its semaphores to Python's resource tracker,
    which then warns at exit ("leaked semaphore objects")."""
    affinities, truth, offsets = sample_3d
    settings = parameter_grid(WatershedParameters(offsets=offsets), bias=[0.4, 0.6])
    with Sweeper(workers=2) as sweeper:
        sweeper.start(SweepInputs(affinities, truth), settings).wait(timeout=patience(60))
        workers = list(sweeper._executor._processes.values())
    assert len(workers) == 2 and [w.exitcode for w in workers] == [0, 0]


def test_a_killed_worker_fails_its_setting_not_the_sweep(sample_3d):
    affinities, truth, offsets = sample_3d
    big = np.tile(affinities, (1, 2, 2, 2))  # 48 x 96 x 96: a second or so per setting
    settings = parameter_grid(WatershedParameters(offsets=offsets), bias=[0.4, 0.6])
    with Sweeper(workers=1) as sweeper:
        job = sweeper.start(SweepInputs(big), settings)
        pid = wait_inside_a_setting(sweeper, job, seconds=20)
        os.kill(pid, signal.SIGKILL)
        results = job.wait(timeout=patience(20))
        assert job.done and not job.error
        assert any("stopped unexpectedly" in (r.error or "") for r in results)
        # the sweeper starts fresh workers for the next sweep
        (result,) = sweeper.start(SweepInputs(affinities), settings[:1]).wait(
            timeout=patience(20))
        assert result.error is None and result.n_segments > 0


def test_workers_exit_when_their_parent_dies(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import os, sys, time
        import numpy as np
        from napari_mutex_watershed import WatershedParameters
        from napari_mutex_watershed.sweep import Sweeper, SweepInputs, parameter_grid

        if __name__ == "__main__":
            sweeper = Sweeper(workers=2)
            settings = parameter_grid(WatershedParameters(offsets=[(1, 0), (0, 1)]),
                                      bias=[0.4, 0.6])
            job = sweeper.start(SweepInputs(np.random.rand(2, 32, 32)), settings)
            job.wait(timeout=600)
            print(*sweeper.worker_pids(), flush=True)
            os._exit(1)  # a crash: nothing is cleaned up
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=patience(40))
    pids = [int(p) for p in out.stdout.split()]
    assert pids, out.stderr
    workers = []
    for pid in pids:
        try:
            workers.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass  # already gone
    assert wait_gone(workers, seconds=10) == []


def test_a_script_without_a_main_guard_is_not_run_again_by_the_workers(tmp_path):
    """The workers never re-run the caller's script: one that opens napari without an
    ``if __name__ == "__main__":`` guard opened a viewer in each, and the sweep hung."""
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent("""
        import numpy as np
        from napari_mutex_watershed import WatershedParameters
        from napari_mutex_watershed.sweep import Sweeper, SweepInputs, parameter_grid

        print("script ran", flush=True)
        sweeper = Sweeper(workers=2)
        settings = parameter_grid(WatershedParameters(offsets=[(1, 0), (0, 1)]),
                                  bias=[0.4, 0.6])
        results = sweeper.start(SweepInputs(np.random.rand(2, 32, 32)), settings).wait(
            timeout=600)
        print("swept", [r.error for r in results], flush=True)
        sweeper.close()
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=patience(60))
    assert out.stdout.splitlines() == ["script ran", "swept [None, None]"], out.stderr


def wait_inside_a_setting(sweeper, job, seconds: float) -> int:
    """The pid of a worker once it computes a setting: it has the job's affinities mapped
    (run_setting memory-maps them while it segments). A condition, not a guessed delay."""
    deadline = time.monotonic() + patience(seconds)
    while time.monotonic() < deadline:
        crop = job._directory and os.path.join(job._directory, "affinities.npy")
        for pid in sweeper.worker_pids():
            try:
                if crop and any(m.path == crop for m in psutil.Process(pid).memory_maps()):
                    return pid
            except psutil.Error:
                pass
        time.sleep(0.01)  # (polling the condition)
    raise TimeoutError("no worker started a setting")


# ------------------------------------------------------------------------------ CLI
def test_sigterm_stops_the_sweep_and_its_workers(tmp_path):
    """A scheduler's or timeout's SIGTERM ends a sweep as Ctrl-C does: one line, code 130,
    no worker left computing after its parent."""
    from napari_mutex_watershed.synthetic import write_sample

    sample = write_sample(tmp_path / "s.zarr", (48, 128, 128))
    command = subprocess.Popen(
        [sys.executable, "-m", "napari_mutex_watershed.cli", "sweep",
         str(sample["affinities"]), "--gt", str(sample["ground_truth"])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert command.stderr.readline().startswith("sweeping 5 settings")
    process = psutil.Process(command.pid)
    deadline = time.monotonic() + patience(30)
    while len(process.children(recursive=True)) < 2:  # its two workers
        assert time.monotonic() < deadline and command.poll() is None
        time.sleep(0.02)  # (polling the condition)
    family = process.children(recursive=True)
    command.send_signal(signal.SIGTERM)
    _, err = command.communicate(timeout=patience(30))
    assert command.returncode == 130
    assert err.strip().splitlines() == ["error: stopped: the settings under way were dropped"]
    assert wait_gone(family, patience(10)) == []
