"""A region of one block is segmented in one process, the caller's own (a library call, the
command on a small region) or the command's job process: the whole-volume result, no
workers, and its errors in the input's coordinates."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import daisy
import h5py
import numpy as np
import pytest
import zarr
from importtime import imported, python_processes

from napari_mutex_watershed import WatershedParameters, segment
from napari_mutex_watershed.blockwise import fatal, launch
from napari_mutex_watershed.blockwise.launch import segment_blockwise_zarr, work_dir_for
from napari_mutex_watershed.blockwise.supervise import QUICK_REGION_VOXELS
from napari_mutex_watershed.errors import InvalidValuesError, NoSpaceError
from napari_mutex_watershed.storage import write_affinities
from napari_mutex_watershed.synthetic import sample_volume

CLI = [sys.executable, "-m", "napari_mutex_watershed.cli"]


def run(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args), "--progress", "none"], capture_output=True,
                          text=True, timeout=600, env=env)


def test_a_small_region_is_the_whole_volume_result_without_workers(tmp_path):
    affinities, _, offsets = sample_volume((24, 48, 48), seed=8)
    source = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    output = tmp_path / "o.zarr/labels"
    result = run("segment", source, output, "--roi", 2, 4, 6, 20, 40, 40, "--min-size", 5,
                 env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr
    expected = segment(affinities[:, 2:22, 4:44, 6:46],
                       WatershedParameters(offsets=offsets, min_size=5))
    np.testing.assert_array_equal(zarr.open_array(str(output / "0"))[...], expected)
    # no daisy worker ran: daisy writes a log folder per step it starts
    assert not (work_dir_for(output) / "logs").exists()
    # nor a job process: a region this small is segmented in the command's own process
    assert python_processes(result.stderr) == 1
    # which looks at no other process: psutil's import (20 to 30 ms) is not paid
    assert "psutil" not in imported(result.stderr)
    assert not (work_dir_for(output) / fatal.LOG_FILE).exists()
    assert zarr.open_group(str(output)).attrs["mutex_watershed_complete"] is True


def test_a_larger_one_block_region_runs_in_the_job_process(tmp_path):
    """Above ``QUICK_REGION_VOXELS`` the job process, started at once, segments the block:
    Ctrl-C stops it at once."""
    affinities, _, offsets = sample_volume((8, 184, 184), seed=8)
    assert np.prod(affinities.shape[1:]) > QUICK_REGION_VOXELS
    source = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    output = tmp_path / "o.zarr/labels"
    result = run("segment", source, output)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(zarr.open_array(str(output / "0"))[...],
                                  segment(affinities, WatershedParameters(offsets=offsets)))
    assert "finished" in (work_dir_for(output) / fatal.LOG_FILE).read_text()


def test_a_small_region_the_command_could_not_size_stops_its_early_job(tmp_path):
    """HDF5 has no metadata the command reads before it starts its job process: the job,
    still importing, is stopped once the region is known to be small."""
    affinities, _, offsets = sample_volume((16, 32, 32), seed=4)
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f.create_dataset("affs", data=affinities)
    output = tmp_path / "o.zarr/labels"
    result = run("segment", tmp_path / "in.h5/affs", output, "--offsets",
                 " ".join(",".join(map(str, o)) for o in offsets))
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(zarr.open_array(str(output / "0"))[...],
                                  segment(affinities, WatershedParameters(offsets=offsets)))
    assert not (work_dir_for(output) / fatal.LOG_FILE).exists()


def test_its_value_errors_name_the_voxel_of_the_input(tmp_path):
    affinities, _, offsets = sample_volume((24, 48, 48), seed=8)
    affinities[3, 12, 30, 31] = 1.5
    source = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    result = run("segment", source, tmp_path / "o.zarr", "--roi", 10, 20, 20, 12, 24, 24)
    assert result.returncode == 1
    line, = result.stderr.splitlines()
    assert "values outside 0..1" in line and "in channel 3, first at voxel (12, 30, 31)" in line


class JobProcesses(launch.JobProcess):
    """Counts the job processes a library call starts."""
    started = 0

    def __init__(self, *args, **kwargs):
        type(self).started += 1
        super().__init__(*args, **kwargs)


@pytest.fixture
def job_processes(monkeypatch):
    JobProcesses.started = 0
    monkeypatch.setattr(launch, "JobProcess", JobProcesses)
    return JobProcesses


def test_a_library_call_segments_one_block_in_its_own_process(tmp_path, job_processes):
    """No job process to start (a fresh Python, 0.45 s): as fast as a bare call."""
    affinities, _, offsets = sample_volume((16, 32, 32), seed=4)
    source = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    parameters = WatershedParameters(offsets=offsets, min_size=3)
    daisy_logs = daisy.logging.LOG_BASEDIR  # also where the caller's own daisy tasks mark done
    output = segment_blockwise_zarr(source, tmp_path / "o.zarr/labels", parameters,
                                    progress="none")
    assert job_processes.started == 0
    assert daisy.logging.LOG_BASEDIR == daisy_logs
    np.testing.assert_array_equal(zarr.open_array(str(output))[...],
                                  segment(affinities, parameters))
    assert zarr.open_group(str(output.parent)).attrs["mutex_watershed_complete"] is True
    # several blocks still go to a job process and its workers
    segment_blockwise_zarr(source, tmp_path / "p.zarr/labels", parameters, progress="none",
                           block_size=(8, 32, 32), num_workers=1)
    assert job_processes.started == 1


def test_a_small_run_s_bookkeeping_takes_no_zarr_round_trips(tmp_path, zarr_round_trips,
                                                             monkeypatch):
    """Each of zarr's round trips through its event loop costs about 1 ms, next to a kernel
    of 15 to 20 ms at this size: a library call once made thirteen (opening the input twice,
    the output's groups, level 0's creation, the complete flags, its resume checks). Only
    the first array of its kind a process creates takes one (zarr makes its metadata once);
    everything else reads and writes the JSON and chunk files itself."""
    from napari_mutex_watershed.storage import outputs

    affinities, _, offsets = sample_volume((16, 32, 32), seed=4)
    source = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    parameters = WatershedParameters(offsets=offsets)
    monkeypatch.setattr(outputs, "_TEMPLATES", {})
    zarr_round_trips.clear()
    output = segment_blockwise_zarr(source, tmp_path / "o.zarr/labels", parameters,
                                    progress="none")
    assert len(zarr_round_trips) == 1  # zarr's metadata of a uint32 array
    zarr_round_trips.clear()
    again = segment_blockwise_zarr(source, tmp_path / "again.zarr/labels", parameters,
                                   progress="none")
    assert not zarr_round_trips
    segment_blockwise_zarr(source, tmp_path / "o.zarr/labels", parameters, progress="none")
    assert not zarr_round_trips  # complete: returns at once
    for labels in (output, again):
        np.testing.assert_array_equal(zarr.open_array(str(labels))[...],
                                      segment(affinities, parameters))


def test_one_block_in_the_caller_fails_with_the_input_s_coordinates(tmp_path, job_processes):
    affinities, _, offsets = sample_volume((24, 48, 48), seed=8)
    affinities[3, 12, 30, 31] = 1.5
    source = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    with pytest.raises(InvalidValuesError, match=r"in channel 3, first at voxel \(12, 30, 31\)"):
        segment_blockwise_zarr(source, tmp_path / "o.zarr", WatershedParameters(offsets=offsets),
                               roi=((10, 20, 20), (12, 24, 24)), progress="none")
    assert job_processes.started == 0


def test_a_full_disk_in_the_caller_is_one_line(tmp_path, monkeypatch, job_processes):
    affinities, _, offsets = sample_volume((16, 32, 32), seed=4)
    source = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)

    def full(plan_path):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o.zarr/x"))

    monkeypatch.setattr(launch, "run_plan", full)
    with pytest.raises(NoSpaceError, match=f"no space left on device at {tmp_path}/o.zarr/x"):
        segment_blockwise_zarr(source, tmp_path / "o.zarr", WatershedParameters(offsets=offsets),
                               progress="none")
    assert job_processes.started == 0
