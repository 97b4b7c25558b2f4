"""One run per output: a second run is refused at once and never touches the first's state."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from napari_mutex_watershed.blockwise.launch import work_dir_for
from napari_mutex_watershed.blockwise.lock import RunLock, lock_path
from napari_mutex_watershed.errors import NoSpaceError, OutputInUseError
from napari_mutex_watershed.storage import write_affinities
from napari_mutex_watershed.synthetic import sample_volume

CLI = [sys.executable, "-m", "napari_mutex_watershed.cli"]
#: Generous: a bound for a busy machine, not a measurement.
PATIENCE = 120


@pytest.fixture
def affinities(tmp_path):
    data, _, offsets = sample_volume((16, 32, 32), seed=5)
    return write_affinities(tmp_path / "in.zarr/affinities", data, offsets)


def cli(*args, **kwargs):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                          timeout=PATIENCE, **kwargs)


def test_a_second_lock_is_refused_naming_the_holder(tmp_path):
    with RunLock(tmp_path / "run", "out.zarr/labels"):
        code = textwrap.dedent(f"""
            from napari_mutex_watershed.blockwise.lock import RunLock
            from napari_mutex_watershed.errors import NoSpaceError, OutputInUseError
            try:
                RunLock({str(tmp_path / "run")!r}, "out.zarr/labels").acquire()
            except OutputInUseError as error:
                print(error)
        """)
        answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=PATIENCE).stdout
    assert answer.startswith(f"out.zarr/labels is in use by pid {os.getpid()} (")
    # released: the next one gets it
    with RunLock(tmp_path / "run"):
        pass


def test_the_lock_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from napari_mutex_watershed.blockwise.lock import "
         f"RunLock; RunLock({str(tmp_path / 'run')!r}).acquire(); print('held', flush=True); "
         "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(OutputInUseError):
        RunLock(tmp_path / "run").acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=PATIENCE)
    with RunLock(tmp_path / "run"):  # the operating system released it
        pass


def test_a_lock_that_cannot_be_made_leaves_nothing(tmp_path, monkeypatch):
    """A full disk when the lock file is made: one line saying so, and the folders made
    for it are removed."""
    real_open = os.open

    def full(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", full)
    with pytest.raises(NoSpaceError, match=f"no space left on device at {tmp_path / 'a'}"):
        RunLock(tmp_path / "a" / "b" / "run").acquire()
    assert list(tmp_path.iterdir()) == []


def test_a_run_on_an_output_in_use_is_refused_at_once_even_with_overwrite(affinities, tmp_path):
    output = tmp_path / "o.zarr/labels"
    work_dir = work_dir_for(output)
    work_dir.mkdir(parents=True)
    (work_dir / "state").write_text("the running job's")
    with RunLock(work_dir, output):
        for extra in ([], ["--overwrite"]):
            result = cli("segment", affinities, output, *extra)
            assert result.returncode == 1
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, result.stderr
            assert lines[0].startswith(f"error: {output} is in use by pid {os.getpid()} (")
    assert (work_dir / "state").read_text() == "the running job's"
    assert not output.exists()


def test_one_output_has_one_lock_whatever_names_it(affinities, tmp_path):
    """Through a symlinked container, a symlinked folder above it or a relative path, a run
    on an output another run holds is refused: each spelling once had a lock of its own."""
    output = tmp_path / "o.zarr/labels"
    (tmp_path / "link.zarr").symlink_to(tmp_path / "o.zarr")
    (tmp_path / "above").symlink_to(tmp_path)
    (tmp_path / "o.zarr").mkdir()
    with RunLock(work_dir_for(output), output):
        for name, where in ((tmp_path / "link.zarr/labels", None),
                            (tmp_path / "above/o.zarr", None),
                            ("o.zarr/x/../labels", tmp_path)):
            result = cli("segment", affinities, name, "--overwrite", cwd=where)
            assert result.returncode == 1, (name, result.stdout)
            assert f"is in use by pid {os.getpid()} (" in result.stderr, name
    assert not output.exists()
    assert work_dir_for("o.zarr/labels") != work_dir_for(output)  # (cwd is elsewhere)
    assert {work_dir_for(tmp_path / "link.zarr"), work_dir_for(tmp_path / "above/o.zarr")} == {
        work_dir_for(output)}
    # a run started through the link before the work folder followed links resumes there
    legacy = tmp_path / "link.zarr.mutex_watershed/labels"
    legacy.mkdir(parents=True)
    (legacy / "plan.json").write_text("{}")
    assert work_dir_for(tmp_path / "link.zarr/labels") == legacy
    assert work_dir_for(output) == tmp_path / "o.zarr.mutex_watershed/labels"


def test_the_job_keeps_the_lock_when_the_command_that_started_it_dies(affinities, tmp_path):
    """The lock travels with the plan to the job process: killing the command leaves the job
    running and the output still locked, naming the job."""
    output = tmp_path / "o.zarr/labels"
    go = tmp_path / "go"
    # workers wait for the test's go-ahead, so the job is certainly running while we look
    template = f"while [ ! -e {go} ]; do sleep 0.05; done; {{command}}"
    first = subprocess.Popen([*CLI, "segment", str(affinities), str(output), "--progress",
                              "none", "--worker-command", template],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = lock_path(work_dir_for(output))
    job = _wait_for_job(lock, first)

    second = cli("segment", affinities, output, "--overwrite")
    assert second.returncode == 1 and f"in use by pid {first.pid} (" in second.stderr

    first.send_signal(signal.SIGKILL)  # the command only; its job lives on
    first.wait(timeout=PATIENCE)
    assert job.is_running()
    third = cli("segment", affinities, output, "--overwrite")
    assert third.returncode == 1 and f"in use by pid {job.pid} (" in third.stderr

    go.touch()
    job.wait(timeout=PATIENCE)
    again = cli("segment", affinities, output, "--worker-command", template)
    assert again.returncode == 0, again.stderr
    assert f"already complete: {output.resolve()}" in again.stdout


def _wait_for_job(lock, command) -> psutil.Process:
    """The job process, once it has noted itself in the lock file (an event, not a delay)."""
    process = psutil.Process(command.pid)
    for _ in range(PATIENCE * 20):
        lines = lock.read_text().splitlines() if lock.exists() else []
        jobs = [int(line.split()[1]) for line in lines if line.startswith("job ")]
        if jobs:
            return psutil.Process(jobs[0])
        assert command.poll() is None, command.communicate()
        psutil.wait_procs([process], timeout=0.05)  # returns at once if it ends
    raise AssertionError("the job never took the lock")


@pytest.mark.parametrize("first, second", [("seg", "seg.lock"), ("seg.lock", "seg"),
                                           ("seg", "seg.lock/inner")])
def test_an_output_named_like_a_lock_is_refused_in_one_line(affinities, tmp_path, first,
                                                            second):
    """A dataset ``seg.lock`` would keep its work folder where ``seg``'s lock file is: refused
    before anything is made, whichever ran first, and the other's output is untouched."""
    container = tmp_path / "o.zarr"
    runs = [cli("segment", affinities, container / name, "--progress", "none")
            for name in (first, second)]
    named_like_a_lock = [r for r, name in zip(runs, (first, second)) if ".lock" in name]
    other = [r for r, name in zip(runs, (first, second)) if ".lock" not in name]
    assert other[0].returncode == 0, other[0].stderr
    refused = named_like_a_lock[0]
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"error: an output named {(first if '.lock' in first else second)!r} would keep its "
        "run files where another output's lock goes: choose a name with no part ending in "
        ".lock"]
    assert sorted(p.name for p in container.iterdir()) == ["seg", "zarr.json"]
    assert cli("segment", affinities, container / "seg").stdout.startswith("already complete")
