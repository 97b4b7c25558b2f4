"""--cluster slurm|lsf: the worker command built from the block size, its overrides, the
refusals, the guard that cancels a run's jobs, and a whole run through a stand-in ``bsub``
(there is no LSF here; tests/cluster/ runs a real SLURM)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.blockwise import scheduler
from napari_mutex_watershed.blockwise.launch import (
    segment_blockwise_zarr,
    validate_request,
    work_dir_for,
)
from napari_mutex_watershed.blockwise.scheduler import (
    WorkerResources,
    apply_options,
    cluster_template,
    estimate,
    parse_memory_mb,
    parse_minutes,
    parse_options,
    run_prefix,
    worker_template,
)
from napari_mutex_watershed.errors import InvalidInputError
from napari_mutex_watershed.processes import stop_tree
from napari_mutex_watershed.storage import labels_level0, write_affinities
from napari_mutex_watershed.synthetic import sample_volume

CLI = [sys.executable, "-m", "napari_mutex_watershed.cli"]
DEFAULT_HALO = (6, 16, 16)  # the odd blocks' halo for the default offsets
#: Seconds a wait on another process may take at most (on a busy 2-core machine).
WAIT = 120


# ------------------------------------------------------------------ resources and templates
def test_estimate_grows_with_the_block_and_stays_whole():
    small = estimate((64, 64, 64), DEFAULT_HALO, 6, num_blocks=1000, workers=10)
    large = estimate((128, 128, 128), DEFAULT_HALO, 6, num_blocks=1000, workers=10)
    assert small.cores == large.cores == 1
    assert small.memory_mb % 256 == 0 and large.memory_mb % 256 == 0
    assert 512 <= small.memory_mb < large.memory_mb
    # the measured peaks (docs/blockwise.md) fit with room to spare
    assert small.memory_mb >= 1.5 * 519 and large.memory_mb >= 1.5 * 2110
    assert small.minutes < large.minutes
    assert estimate((64, 64, 64), DEFAULT_HALO, 6, 1, 1).minutes == scheduler.MIN_MINUTES


def test_fewer_workers_get_more_time_each():
    many = estimate((128,) * 3, DEFAULT_HALO, 6, num_blocks=10_000, workers=100)
    few = estimate((128,) * 3, DEFAULT_HALO, 6, num_blocks=10_000, workers=10)
    assert few.minutes > many.minutes
    assert few.memory_mb == many.memory_mb


@pytest.mark.parametrize("text, mb", [("8000", 8000), ("8000M", 8000), ("8G", 8192),
                                      ("1.5g", 1536), ("2GB", 2048), ("1T", 1024**2)])
def test_memory_units(text, mb):
    assert parse_memory_mb(text) == mb


@pytest.mark.parametrize("text, minutes", [("90", 90), ("1:30", 90), ("2:00:00", 120),
                                           ("0:10:30", 11)])
def test_time_forms(text, minutes):
    assert parse_minutes(text) == minutes


@pytest.mark.parametrize("options, message", [
    (["gpus=1"], "unknown cluster option 'gpus'"),
    (["memory"], "KEY=VALUE"),
    (["memory=lots"], "memory must look like"),
    (["time=soon"], "time must be minutes"),
    (["time=0"], "at least 1 minute"),
    (["cores=0"], "cores must be a whole number"),
    (["extra=--comment 'open"], "extra arguments"),
])
def test_bad_options_are_named(options, message):
    with pytest.raises(InvalidInputError, match=message):
        apply_options(WorkerResources(), parse_options(options))


def test_overrides_and_aliases():
    options = parse_options(["queue=short", "mem=6G", "walltime=2:00", "project=lab",
                             "cpus=2", "extra=--qos=high --comment 'a b'"])
    resources = apply_options(WorkerResources(), options)
    assert resources == WorkerResources(cores=2, memory_mb=6144, minutes=120,
                                        partition="short", account="lab",
                                        extra=("--qos=high", "--comment", "a b"))


def _filled(template: str, command=("python", "-m", "worker", "/runs/plan.json", "even")):
    joined = shlex.join(command)
    return shlex.split(template.format(command=joined, quoted_command=shlex.quote(joined),
                                       name="mws-abc-1", logs="/runs/logs/even"))


def test_slurm_template():
    resources = WorkerResources(cores=1, memory_mb=1024, minutes=30, partition="short",
                                account="lab", extra=("--qos={high}",))
    words = _filled(worker_template("slurm", resources))
    assert words[:2] == ["sbatch", "--wait"]
    for word in ["--job-name=mws-abc-1", "--cpus-per-task=1", "--mem=1024M", "--time=30",
                 "--partition=short", "--account=lab", "--qos={high}",
                 "--output=/runs/logs/even/slurm-%j.out"]:
        assert word in words
    # the worker command is one argument of --wrap, whatever its paths hold
    assert words[-2:] == ["--wrap", "python -m worker /runs/plan.json even"]
    spaced = _filled(worker_template("slurm", resources),
                     ("python", "-m", "worker", "/my runs/$x/plan.json", "even"))
    assert shlex.split(spaced[-1]) == ["python", "-m", "worker", "/my runs/$x/plan.json", "even"]


def test_lsf_template():
    resources = WorkerResources(cores=1, memory_mb=1536, minutes=95, partition="short",
                                account="lab")
    words = _filled(worker_template("lsf", resources))
    assert words[:2] == ["bsub", "-K"]
    text = " ".join(words[:-1])
    for part in ["-J mws-abc-1", "-n 1", "-M 1536MB", "-R rusage[mem=1536MB]", "-W 1:35",
                 "-q short", "-P lab", "-o /runs/logs/even/lsf-%J.out"]:
        assert part in text
    assert words[-1] == "python -m worker /runs/plan.json even"


def test_cluster_template_uses_the_estimate_unless_overridden():
    geometry = {"block_size": (64, 64, 64), "halo": DEFAULT_HALO, "channels": 6,
                "num_blocks": 64, "workers": 4}
    expected = estimate((64, 64, 64), DEFAULT_HALO, 6, 64, 4)
    template = cluster_template("slurm", None, **geometry)
    assert f"--mem={expected.memory_mb}M" in template
    assert f"--time={expected.minutes}" in template
    template = cluster_template("slurm", {"memory": "3G", "time": "45"}, **geometry)
    assert "--mem=3072M" in template and "--time=45" in template


# ------------------------------------------------------------------ refusals
def test_cluster_and_worker_command_together_are_refused():
    with pytest.raises(InvalidInputError, match="exclude each other"):
        validate_request("in.zarr/affinities", "out.zarr/labels", cluster="slurm",
                         worker_command="env {command}")


def test_cluster_requests_are_checked_before_the_input_is_opened():
    for options, message in [({"cluster": "pbs"}, "one of slurm, lsf"),
                             ({"cluster_options": ["mem=1G"]}, "need --cluster"),
                             ({"cluster": "slurm", "cluster_options": ["mem=x"]}, "memory")]:
        with pytest.raises(InvalidInputError, match=message):
            validate_request("does-not-exist.zarr/affinities", "out.zarr/labels", **options)


def test_the_cli_refuses_both_in_one_line(tmp_path):
    result = subprocess.run(
        [*CLI, "segment", str(tmp_path / "in.zarr/affinities"), str(tmp_path / "o.zarr/labels"),
         "--cluster", "slurm", "--worker-command", "env {command}"],
        capture_output=True, text=True, timeout=WAIT, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        ("error: --cluster and --worker-command exclude each other: --cluster builds the "
         "worker command (adjust it with --cluster-option)")]


def test_job_names_belong_to_their_run(tmp_path, monkeypatch):
    monkeypatch.setenv(scheduler.ATTEMPT_ENV, "feed")
    name = scheduler.job_name(tmp_path / "a")
    assert name == f"{run_prefix(tmp_path / 'a')}-feed"
    assert run_prefix(tmp_path / "a") != run_prefix(tmp_path / "b")
    assert run_prefix(tmp_path / "a").startswith("mws-")


# ------------------------------------------------------------------ the guard
def _recorder(folder, name: str, record) -> None:
    """A stand-in command ``name`` on PATH that appends its arguments to ``record``."""
    path = folder / name
    path.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(record))}\n')
    path.chmod(0o755)


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_the_guard_outlives_a_stopped_tree_and_cancels_the_jobs(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "scancel.txt"
    _recorder(bin_dir, "scancel", record)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    ready = tmp_path / "ready"
    # a stand-in job process: starts its guard, then waits to be stopped
    code = ("import sys, time, pathlib\n"
            "from napari_mutex_watershed.blockwise.scheduler import start_attempt\n"
            "start_attempt('slurm', sys.argv[1], sys.argv[2])\n"
            "pathlib.Path(sys.argv[3]).touch()\n"
            "time.sleep(600)\n")
    job = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "work"),
                            str(tmp_path / "guard.log"), str(ready)])
    try:
        assert _wait_for(ready.exists, WAIT), "the stand-in job did not start its guard"
        assert not record.exists()  # nothing is cancelled while the job lives
        stop_tree(job.pid)  # what a cancel does to the job process and everything below it
    finally:
        job.kill()
        job.wait()
    assert _wait_for(record.exists, WAIT), (tmp_path / "guard.log").read_text()
    words = record.read_text().splitlines()[0].split()
    assert words[:2] == ["--name", words[1]]
    assert words[1].startswith(run_prefix(tmp_path / "work") + "-")


# ------------------------------------------------------------------ LSF through a stand-in bsub
@pytest.mark.slow
def test_lsf_workers_through_a_stand_in_bsub(tmp_path):
    affinities, _, offsets = sample_volume((24, 64, 64), seed=3)
    source = tmp_path / "in.zarr" / "affinities"
    write_affinities(source, affinities, offsets)
    params = WatershedParameters(bias_short=0.4, bias_long=0.6)
    local = segment_blockwise_zarr(source, tmp_path / "local.zarr/labels", params,
                                   block_size=(12, 32, 32), num_workers=2, progress="none",
                                   supervised=False)

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "bsub.txt"
    # bsub -K ...options... COMMAND: record the options, run the command here and wait for it
    (bin_dir / "bsub").write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {shlex.quote(str(record))}\n'
        'for last; do :; done\n'
        'exec sh -c "$last"\n')
    (bin_dir / "bsub").chmod(0o755)
    _recorder(bin_dir, "bkill", tmp_path / "bkill.txt")
    output = tmp_path / "lsf.zarr/labels"
    result = subprocess.run(
        [*CLI, "segment", str(source), str(output), "--block-size", "12", "32", "32",
         "--bias-short", "0.4", "--bias-long", "0.6", "--workers", "2", "--progress", "none",
         "--cluster", "lsf", "--cluster-option", "queue=short", "--cluster-option", "mem=2G"],
        capture_output=True, text=True, timeout=10 * WAIT, check=False,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr

    cluster = zarr.open_array(str(labels_level0(output)), mode="r")[:]
    assert np.array_equal(cluster, zarr.open_array(str(local), mode="r")[:])
    launches = record.read_text().splitlines()
    assert len(launches) >= 4  # even, odd, relabel, pyramid: at least one worker each
    prefix = run_prefix(work_dir_for(output))
    for line in launches:
        words = shlex.split(line)
        assert words[:2] == ["-K", "-J"] and words[2].startswith(prefix + "-")
        assert " -n 1 -M 2048MB -R rusage[mem=2048MB] -W " in line and " -q short" in line
        # the worker command came last
        assert re.search(r"plan\.json (even|odd|relabel|pyramid-\d+)$", line), line
    # the run's jobs were cancelled by name when the job ended (none were left here)
    assert any(line.split()[:2] == ["-J", shlex.split(launches[0])[2]]
               for line in (tmp_path / "bkill.txt").read_text().splitlines())
