"""A local run's workers are forked from the job's zygote: a killed worker or daisy process
counts as daisy's own worker would, and nothing outlives the job."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import zarr
from patience import patience, wait_gone

from napari_mutex_watershed.attributes import COMPLETE_ATTR
from napari_mutex_watershed.storage import labels_level0, write_affinities
from napari_mutex_watershed.synthetic import sample_volume

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")]
CLI = [sys.executable, "-m", "napari_mutex_watershed.cli"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    affinities, _, offsets = sample_volume((48, 96, 96), seed=5)
    return write_affinities(tmp_path_factory.mktemp("zygote") / "in.zarr/affinities",
                            affinities, offsets)


def arguments(source, output) -> list[str]:
    return [*CLI, "segment", str(source), str(output), "--block-size", "12", "24", "24",
            "--workers", "2", "--bias-short", "0.4", "--bias-long", "0.6", "--progress", "none"]


def read(output) -> np.ndarray:
    return zarr.open_array(str(labels_level0(output)), mode="r")[...]


def forks_of(depth: int, tree: list[psutil.Process]) -> list[psutil.Process]:
    """Processes of the job's command whose parents are ``depth`` more of them: 1 the
    zygote, 2 the workers forked from it."""
    found = []
    for process in tree:
        try:
            chain, parent = 0, process.parent()
            if "blockwise.job" not in " ".join(process.cmdline()):
                continue
            while parent is not None and "blockwise.job" in " ".join(parent.cmdline()):
                chain, parent = chain + 1, parent.parent()
        except psutil.Error:
            continue
        if chain == depth:
            found.append(process)
    return found


def wait_for_forked_worker(command: subprocess.Popen) -> tuple[psutil.Process, list]:
    """A worker forked from the zygote, and every process of the tree seen meanwhile."""
    root, seen = psutil.Process(command.pid), {}
    deadline = time.monotonic() + patience(30)
    while time.monotonic() < deadline:
        assert command.poll() is None, command.communicate()
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            tree = []
        seen.update((p.pid, p) for p in tree)
        workers = forks_of(2, tree)
        if workers:
            return workers[0], list(seen.values())
        time.sleep(0.02)
    raise AssertionError("no worker was forked")


def test_local_workers_are_forked_and_nothing_outlives_the_job(source, tmp_path):
    reference = tmp_path / "ref.zarr/labels"
    command = subprocess.Popen(arguments(source, reference), stderr=subprocess.PIPE, text=True)
    worker, seen = wait_for_forked_worker(command)
    assert forks_of(1, seen), "the zygote"
    assert command.wait(timeout=patience(60)) == 0, command.stderr.read()
    assert zarr.open_group(str(reference)).attrs[COMPLETE_ATTR] is True
    assert not wait_gone(seen, 10), "a process of the run outlived it"


@pytest.mark.parametrize("victim", ["forked worker", "daisy's worker process"])
def test_a_killed_worker_is_replaced_and_the_result_unchanged(source, tmp_path, victim):
    reference = tmp_path / "ref.zarr/labels"
    assert subprocess.run(arguments(source, reference), timeout=patience(60)).returncode == 0
    output = tmp_path / "out.zarr/labels"
    command = subprocess.Popen(arguments(source, output), stderr=subprocess.PIPE, text=True)
    worker, _ = wait_for_forked_worker(command)
    # daisy's process asked the zygote for the worker and waits for its exit status
    requester = next(p for p in psutil.Process(command.pid).children(recursive=True)
                     if "daisy._subprocess_worker" in " ".join(p.cmdline())
                     and p.pid != worker.pid and _asked_for(p, worker))
    if victim == "forked worker":
        worker.send_signal(signal.SIGKILL)
    else:  # the worker, stopped, would never end its block by itself: the zygote kills it
        worker.send_signal(signal.SIGSTOP)
        requester.send_signal(signal.SIGKILL)
    assert not wait_gone([worker, requester], 10), "the other one lives on"
    assert command.wait(timeout=patience(60)) == 0, command.stderr.read()
    np.testing.assert_array_equal(read(output), read(reference))


def _asked_for(requester: psutil.Process, worker: psutil.Process) -> bool:
    """Does ``requester`` hold the other end of the zygote's connection for ``worker``? They
    share daisy's log files, its stdout and stderr."""
    try:
        return {f.path for f in requester.open_files()} >= {f.path for f in worker.open_files()
                                                           if f.path.endswith((".out", ".err"))}
    except psutil.Error:
        return False
