"""A full run as a background job without Qt: the CLI's command, its progress read back,
Cancel of its whole process group, and what its output then is (resumable, finished)."""

from __future__ import annotations

import sys
import time

import psutil
import pytest
from patience import patience, wait_gone

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.blockwise.progress import ProgressTally
from napari_mutex_watershed.blockwise.run_control import Job, build_command, shell_command
from napari_mutex_watershed.blockwise.run_outputs import output_in_use, output_state
from napari_mutex_watershed.storage import write_affinities
from napari_mutex_watershed.synthetic import sample_volume

pytestmark = pytest.mark.slow
SHAPE = (24, 64, 64)
BLOCKS = (12, 32, 32)


def poll_until_finished(job: Job, seconds: float, tally: ProgressTally | None = None) -> None:
    deadline = time.monotonic() + patience(seconds)
    while job.running:
        assert time.monotonic() < deadline, "the job did not end"
        for event in job.poll():
            if event.kind == "progress" and tally is not None:
                tally.add(event.progress)
        time.sleep(0.05)


@pytest.fixture
def run(tmp_path):
    affinities, _, offsets = sample_volume(SHAPE, seed=5)
    input_path = write_affinities(tmp_path / "in.zarr" / "affinities", affinities, offsets)
    parameters = WatershedParameters(offsets=offsets, bias_short=0.45)
    parameters.save(tmp_path / "parameters.json")
    output = tmp_path / "in.zarr" / "labels"
    command = build_command(input_path, output, tmp_path / "parameters.json", 2, BLOCKS)
    return input_path, output, parameters, command


def test_a_job_reports_its_progress_and_leaves_a_finished_output(run):
    input_path, output, parameters, command = run
    assert output_state(input_path, output, parameters, BLOCKS, SHAPE) == "absent"
    assert shell_command(command).startswith("napari-mutex-watershed segment ")
    tally = ProgressTally()
    job = Job(command)
    poll_until_finished(job, 60, tally)
    assert job.returncode == 0, job.error_message()
    assert tally.describe() == "done" and tally.value()[0] == tally.value()[1] == 2 * 8 + 1
    assert output_state(input_path, output, parameters, BLOCKS, SHAPE) == "finished"
    other = parameters.model_copy(update={"bias_short": 0.3})
    assert output_state(input_path, output, other, BLOCKS, SHAPE) == "other"
    assert output_in_use(output) is None


def test_cancel_stops_the_whole_group_and_the_output_resumes(run):
    input_path, output, parameters, command = run
    job = Job(command[:command.index("--workers") + 1] + ["1"]
              + command[command.index("--workers") + 2:])
    deadline = time.monotonic() + patience(60)
    while not any(m["phase"] == "even" and m["done"] >= 1 for m in job.progress):
        assert job.running and time.monotonic() < deadline, job.error_message()
        job.poll()
        time.sleep(0.02)
    family = [psutil.Process(job.pid)] + psutil.Process(job.pid).children(recursive=True)
    job.cancel()
    poll_until_finished(job, 30)
    assert job.cancel_requested and job.returncode != 0
    assert wait_gone(family, 10) == []
    assert output_state(input_path, output, parameters, BLOCKS, SHAPE) == "resumable"


def test_a_job_is_a_module_run():
    with pytest.raises(ValueError, match="module run"):
        Job([sys.executable, "-c", "pass"])
