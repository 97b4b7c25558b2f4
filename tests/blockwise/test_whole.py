"""A region of one block is segmented in the job process: the whole-volume result, no
workers, and its errors in the input's coordinates."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import zarr

from napari_mutex_watershed import WatershedParameters, segment
from napari_mutex_watershed.blockwise.launch import work_dir_for
from napari_mutex_watershed.storage import write_affinities
from napari_mutex_watershed.synthetic import sample_volume

CLI = [sys.executable, "-m", "napari_mutex_watershed.cli"]


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args), "--progress", "none"], capture_output=True,
                          text=True, timeout=600)


def test_a_small_region_is_the_whole_volume_result_without_workers(tmp_path):
    affinities, _, offsets = sample_volume((24, 48, 48), seed=8)
    source = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    output = tmp_path / "o.zarr/labels"
    result = run("segment", source, output, "--roi", 2, 4, 6, 20, 40, 40, "--min-size", 5)
    assert result.returncode == 0, result.stderr
    expected = segment(affinities[:, 2:22, 4:44, 6:46],
                       WatershedParameters(offsets=offsets, min_size=5))
    np.testing.assert_array_equal(zarr.open_array(str(output / "0"))[...], expected)
    # no daisy worker ran: daisy writes a log folder per step it starts
    assert not (work_dir_for(output) / "logs").exists()
    assert zarr.open_group(str(output)).attrs["mutex_watershed_complete"] is True


def test_its_value_errors_name_the_voxel_of_the_input(tmp_path):
    affinities, _, offsets = sample_volume((24, 48, 48), seed=8)
    affinities[3, 12, 30, 31] = 1.5
    source = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    result = run("segment", source, tmp_path / "o.zarr", "--roi", 10, 20, 20, 12, 24, 24)
    assert result.returncode == 1
    line, = result.stderr.splitlines()
    assert "values outside 0..1" in line and "in channel 3, first at voxel (12, 30, 31)" in line
