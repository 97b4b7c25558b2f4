"""Workers as jobs of a real SLURM cluster (``.ci/slurm.sh`` starts one on this machine; CI
runs it before the tests). Without ``sinfo`` or with the cluster down, these are skipped.

Each test runs ``segment --cluster slurm`` on a small volume (8 blocks, 2 workers) and finds
its jobs in ``squeue`` by the run's name prefix (``scheduler.run_prefix``). Waits on other
processes wait for a condition, bounded generously (more on a busy machine).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.blockwise.launch import segment_blockwise_zarr, work_dir_for
from napari_mutex_watershed.blockwise.scheduler import run_prefix
from napari_mutex_watershed.storage import labels_level0, write_affinities
from napari_mutex_watershed.synthetic import sample_volume

pytestmark = pytest.mark.cluster
CLI = [sys.executable, "-m", "napari_mutex_watershed.cli"]
BLOCK = (12, 32, 32)
SEGMENT = ["--block-size", *map(str, BLOCK), "--bias-short", "0.4", "--bias-long", "0.6",
           "--workers", "2", "--cluster", "slurm"]


def _bound(seconds: float) -> float:
    """``seconds`` enough on an idle machine, stretched for a busy one (2 shared cores)."""
    try:
        load = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        load = 0.0
    return seconds * (3 + load)


def wait_for(condition, seconds: float, what: str):
    """Poll ``condition`` until it returns something true; fail naming ``what`` after the
    bound."""
    deadline = time.monotonic() + _bound(seconds)
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def cluster_state() -> str | None:
    """Why the tests cannot run, or None when the cluster takes jobs."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM is not installed (no sinfo/sbatch; .ci/slurm.sh sets up a cluster)"
    try:
        result = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True,
                                text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "sinfo does not answer (slurmctld down? run .ci/slurm.sh)"
    states = result.stdout.split()
    if result.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mixed", "allocated")
                                         for s in states):
        detail = result.stderr.strip() or " ".join(states) or "no nodes"
        return f"the SLURM cluster is not up ({detail}; run .ci/slurm.sh)"
    return None


@pytest.fixture(scope="module")
def slurm():
    reason = cluster_state()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def volume(tmp_path_factory, slurm):
    """Small affinities and the local (in-process) run's labels, which every cluster run must
    equal bit for bit."""
    folder = tmp_path_factory.mktemp("slurm")
    affinities, _, offsets = sample_volume((24, 64, 64), seed=3)
    source = folder / "in.zarr" / "affinities"
    write_affinities(source, affinities, offsets)
    local = segment_blockwise_zarr(
        source, folder / "local.zarr/labels", WatershedParameters(bias_short=0.4, bias_long=0.6),
        block_size=BLOCK, num_workers=2, progress="none", supervised=False)
    return source, zarr.open_array(str(local), mode="r")[:]


def level0(output) -> np.ndarray:
    return zarr.open_array(str(labels_level0(output)), mode="r")[:]


def run_jobs(output) -> list[dict]:
    """The run's jobs in squeue (pending, running, completing): id, name, state."""
    result = subprocess.run(["squeue", "--noheader", "--format=%i|%j|%T"],
                            capture_output=True, text=True, timeout=60, check=True)
    prefix = run_prefix(work_dir_for(output)) + "-"
    jobs = []
    for line in result.stdout.splitlines():
        job_id, name, state = line.strip().split("|")
        if name.startswith(prefix):
            jobs.append({"id": job_id, "name": name, "state": state})
    return jobs


def launches(output) -> list[dict]:
    path = work_dir_for(output) / "launches.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def a_launch_failed(output, seconds: float) -> bool:
    """Did a worker's launch fail within ``seconds`` (a killed job's ``sbatch --wait`` ends
    non-zero)? A job's output saying CANCELLED does not tell: SLURM also writes it when
    scancel reaches a job that is ending on its own, and that launch succeeds."""
    deadline = time.monotonic() + _bound(seconds)
    while time.monotonic() < deadline:
        if any(launch["code"] != 0 for launch in launches(output)):
            return True
        time.sleep(0.2)
    return False


def start_cli(source, output, *extra, env=None) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "segment", str(source), str(output), *SEGMENT,
                             "--progress", "none", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def holding_blocks(folder: Path, records: Path) -> tuple[dict, Path]:
    """An environment whose worker jobs (they get the submitter's: ``--export=ALL``) stop
    before the mutex watershed of a block while the returned gate file exists, once a block
    is done (a record in ``records``), each leaving ``held-<its SLURM job id>`` beside the
    gate; through a ``sitecustomize`` on PYTHONPATH. A job found there holds a block and
    cannot end on its own: this volume's blocks take milliseconds, so a job merely seen
    running after a block was often already ending, scancel missed it, and the run could
    end before a kill landed."""
    folder.mkdir()
    gate = folder / "gate"
    gate.touch()
    (folder / "sitecustomize.py").write_text(
        '"""Test only (tests/cluster/test_slurm.py): a worker job holds its block at the gate."""\n'
        "import os\nimport time\nfrom pathlib import Path\n\nimport mwatershed\n\n"
        f"GATE = Path({str(gate)!r})\nRECORDS = Path({str(records)!r})\n"
        "_agglom = mwatershed.agglom\n\n\n"
        "def agglom(*args, **kwargs):\n"
        "    job = os.environ.get('SLURM_JOB_ID')\n"
        "    if job and GATE.exists() and RECORDS.is_dir() and any(RECORDS.glob('*.npz')):\n"
        "        (GATE.parent / f'held-{job}').touch()\n"
        "        while GATE.exists():\n"
        "            time.sleep(0.05)\n"
        "    return _agglom(*args, **kwargs)\n\n\n"
        "mwatershed.agglom = agglom\n")
    paths = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}, gate


def finish(process: subprocess.Popen, seconds: float) -> tuple[int, str]:
    try:
        _, stderr = process.communicate(timeout=_bound(seconds))
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"the command did not end: {stderr[-2000:]}")
    return process.returncode, stderr


def clean_up(process: subprocess.Popen, output) -> None:
    """After a test, whatever happened: the command gone and none of its jobs queued."""
    if process.poll() is None:
        process.kill()
        process.wait()
    cancel_leftovers(output)


def cancel_leftovers(output) -> None:
    """A failed test must not leave jobs for the next one."""
    for job in run_jobs(output):
        subprocess.run(["scancel", job["id"]], timeout=60, check=False)


# ------------------------------------------------------------------ (a) equal bit for bit
def test_slurm_workers_equal_the_local_run_bit_for_bit(volume, tmp_path):
    source, local = volume
    output = tmp_path / "out.zarr" / "labels"
    try:
        code, stderr = finish(start_cli(source, output), 240)
        assert code == 0, stderr
        assert np.array_equal(level0(output), local)
    finally:
        cancel_leftovers(output)
    # every worker was a SLURM job of this run, and none is left
    done = launches(output)
    assert {x["step"] for x in done} >= {"even", "odd", "relabel"}
    assert all(x["code"] == 0 and x["command"].startswith("sbatch --wait") for x in done)
    assert all(f"--job-name={run_prefix(work_dir_for(output))}-" in x["command"] for x in done)
    slurm_outputs = list((work_dir_for(output) / "logs").glob("*/slurm-*.out"))
    assert len(slurm_outputs) == len(done)
    assert run_jobs(output) == []


# ------------------------------------------------------------------ (b) scancel is retried
def test_a_worker_job_killed_by_scancel_is_retried(volume, tmp_path):
    source, local = volume
    output = tmp_path / "out.zarr" / "labels"
    # plan.records_dir: a record = a block done
    env, gate = holding_blocks(tmp_path / "holding", work_dir_for(output) / "blocks")
    process = start_cli(source, output, env=env)
    try:
        # kill a worker job that holds a block, once the run has finished one
        def a_holding_job():
            if process.poll() is not None:
                pytest.fail(f"the run ended first: {process.communicate()[1][-2000:]}")
            holding = {p.name.removeprefix("held-") for p in gate.parent.glob("held-*")}
            return [j for j in run_jobs(output)
                    if j["state"] == "RUNNING" and j["id"] in holding]

        victim = wait_for(a_holding_job, 60, "a worker job holding a block")[0]
        subprocess.run(["scancel", victim["id"]], check=True, timeout=60)
        wait_for(lambda: victim["id"] not in {j["id"] for j in run_jobs(output)}, 60,
                 "the killed job to leave squeue")
        assert a_launch_failed(output, 10), launches(output)
        gate.unlink()  # the other jobs go on; the killed job's block is run again
        code, stderr = finish(process, 240)
        assert code == 0, stderr
        assert np.array_equal(level0(output), local)
    finally:
        gate.unlink(missing_ok=True)
        clean_up(process, output)
    # the killed worker's launch failed and the run went on with new ones
    done = launches(output)
    failed = [i for i, x in enumerate(done) if x["code"] != 0]
    assert len(failed) == 1, done
    assert failed[0] < len(done) - 1
    assert run_jobs(output) == []


# ------------------------------------------------------------------ (c) cancel reaches SLURM
def test_cancelling_the_run_leaves_no_job_in_squeue(volume, tmp_path):
    source, _ = volume
    output = tmp_path / "out.zarr" / "labels"
    # jobs are submitted held, so they stay queued until released: one is released and runs,
    # the others wait, as on a busy cluster
    process = start_cli(source, output, "--cluster-option", "extra=--hold")
    try:
        def queued_jobs():
            jobs = run_jobs(output)
            return jobs if len(jobs) >= 2 else None

        queued = wait_for(queued_jobs, 60, "two queued worker jobs")
        subprocess.run(["scontrol", "release", queued[0]["id"]], check=True, timeout=60)
        wait_for(lambda: any(j["state"] == "RUNNING" for j in run_jobs(output)), 60,
                 "the released worker job to run")
        assert any(j["state"] == "PENDING" for j in run_jobs(output))

        process.send_signal(signal.SIGTERM)  # what a user's cancel does to the command
        code, stderr = finish(process, 60)
        assert code == 130, stderr
        assert "cancelled" in stderr
        wait_for(lambda: run_jobs(output) == [], 60,
                 f"the run's jobs to leave squeue (left: {run_jobs(output)})")
    finally:
        clean_up(process, output)
    # the same command resumes (no held jobs this time) and finishes
    code, stderr = finish(start_cli(source, output), 240)
    assert code == 0, stderr
    assert run_jobs(output) == []



# ------------------------------------------------------------------ (d) a failed run, too
def test_a_run_stopped_by_an_input_error_leaves_no_job_in_squeue(tmp_path, slurm):
    affinities, _, offsets = sample_volume((24, 64, 64), seed=3)
    affinities[2, 4::8, 4::8, 4::8] = np.nan  # every block meets some
    source = tmp_path / "nan.zarr" / "affinities"
    write_affinities(source, affinities, offsets)
    output = tmp_path / "out.zarr" / "labels"
    process = start_cli(source, output)
    try:
        code, stderr = finish(process, 240)
        assert code == 1
        assert "NaN" in stderr, stderr
        wait_for(lambda: run_jobs(output) == [], 60,
                 f"the run's jobs to leave squeue (left: {run_jobs(output)})")
    finally:
        clean_up(process, output)
