"""Failures that stop a run at once instead of being retried.

daisy retries every failed block, which helps against a lost node but not against NaN in the
input, a corrupted chunk or a worker command that cannot start: those fail the same way every
time. A worker that meets one writes it to the run's folder (first one wins) and the job
process, which watches that folder, stops every worker and exits with that one line.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: the first writer usually wins anyway
    fcntl = None

#: Written by the first worker that meets an input error; read by the job's watchdog.
FATAL_FILE = "fatal.txt"
#: The job's one-line message when it fails, read by the process that started it.
ERROR_FILE = "error.txt"
#: One JSON line per launch of a cluster worker: its step, exit code and stderr tail.
LAUNCHES_FILE = "launches.jsonl"
#: The job's own log: worker tracebacks, daisy's warnings, the steps' summaries.
LOG_FILE = "run.log"
#: Bytes set aside for each message file.
RESERVED = 4096
#: Seconds between two looks of the watchdog.
POLL = 0.1
#: Set in the job's environment (so in its workers') while a watchdog runs.
WATCHED_ENV = "NAPARI_MUTEX_WATERSHED_WATCHED"
#: How long a worker that reported a fatal error waits to be stopped before it fails the
#: block after all (the watchdog reacts within POLL; this only bounds a lost watchdog).
STOP_WAIT = 60.0


def report_fatal(work_dir: str | Path, message: str) -> None:
    """Record ``message`` as the reason the run stops, unless another worker was first; then,
    under a watchdog, hold the block until the watchdog stops us, so daisy never hands it
    to another worker to fail again."""
    write_reserved(Path(work_dir) / FATAL_FILE, message, first_only=True)
    if os.environ.get(WATCHED_ENV):
        time.sleep(STOP_WAIT)


def run_stopped(work_dir: str | Path) -> bool:
    """Has a worker met such an error, under a watchdog that is stopping the run? Then no
    worker takes another block, not even one daisy starts while the job stops the others.
    (Without a watchdog the error fails its block, and daisy ends the run.)"""
    if not os.environ.get(WATCHED_ENV):
        return False
    try:
        with open(Path(work_dir) / FATAL_FILE, "rb") as handle:
            return bool(handle.read(1).strip(b"\0"))
    except OSError:
        return False


def reserve(work_dir: str | Path) -> None:
    """Empty message files with their space allocated, so that a message still fits when
    the disk is full (that is one of the messages)."""
    for name in (FATAL_FILE, ERROR_FILE):
        path = Path(work_dir) / name
        path.unlink(missing_ok=True)
        with open(path, "wb") as handle:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(handle.fileno(), 0, RESERVED)
            else:
                handle.write(bytes(RESERVED))


def write_reserved(path: Path, message: str, first_only: bool = False) -> None:
    """Write ``message`` into a file made by ``reserve`` (or a new one) without growing it."""
    data = message.encode()[: RESERVED - 1]
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        if first_only and os.pread(fd, 1, 0).strip(b"\0"):
            return
        os.pwrite(fd, data + bytes(RESERVED - len(data)), 0)
    except OSError:
        pass
    finally:
        os.close(fd)  # (and unlocks)


def read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().strip(b"\0").decode(errors="replace").strip() or None
    except OSError:
        return None


def record_launch(work_dir: str | Path, step: str, code: int, command: str, stderr: str) -> None:
    """Append one launch of a worker command (appends of one short line do not interleave)."""
    line = json.dumps({"step": step, "code": code, "command": command,
                       "stderr": stderr[-400:]}) + "\n"
    with open(Path(work_dir) / LAUNCHES_FILE, "a") as handle:
        handle.write(line)


def failing_launches(work_dir: str | Path, limit: int) -> str | None:
    """A message if the last ``limit`` launches of worker commands all failed (and none
    succeeded since), else None."""
    try:
        lines = (Path(work_dir) / LAUNCHES_FILE).read_text().splitlines()
    except OSError:
        return None
    recent = []
    for line in reversed(lines):
        try:
            launch = json.loads(line)
        except ValueError:
            continue
        if launch["code"] == 0:
            break
        recent.append(launch)
    if len(recent) < limit:
        return None
    last = recent[0]
    tail = [x for x in last["stderr"].strip().splitlines() if x.strip()]
    return (f"the worker command failed {len(recent)} times in a row in step {last['step']}: "
            f"`{last['command']}` exited with code {last['code']}"
            + (f": {tail[-1].strip()}" if tail else " and printed nothing"))


def launch_limit(plan) -> int:
    """Failed launches in a row that stop a run: one round of retries per worker slot."""
    return (plan.max_retries + 1) * min(plan.num_workers, plan.num_blocks)


class Watchdog(threading.Thread):
    """Calls ``on_fatal(message)`` once when a worker reports a fatal error (an input error,
    a full disk, a worker command that keeps failing)."""

    def __init__(self, work_dir: str | Path, on_fatal):
        super().__init__(daemon=True, name="mutex-watershed-watchdog")
        self.work_dir = Path(work_dir)
        self.on_fatal = on_fatal
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(POLL):
            message = read_text(self.work_dir / FATAL_FILE)
            if message:
                self.on_fatal(message)
                return

    def stop(self) -> None:
        self._stop.set()


def clear(work_dir: str | Path) -> None:
    """Forget the failures of an earlier attempt (a resume starts clean); reserve the space
    of this attempt's messages."""
    (Path(work_dir) / LAUNCHES_FILE).unlink(missing_ok=True)
    reserve(work_dir)

