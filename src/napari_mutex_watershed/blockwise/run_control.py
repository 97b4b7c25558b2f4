"""A full run as a background job, without Qt: the CLI's own command in a process group of its
own, read by two threads, polled from the caller's thread.

The job is the command users run on a cluster,
``python -m napari_mutex_watershed.cli segment INPUT OUTPUT --params P --progress json ...``,
started at a lower CPU and I/O priority, so:

- the caller (napari) stays responsive (mwatershed holds the GIL; daisy runs its own scheduler),
- Cancel signals the whole group (SIGTERM, then SIGKILL after ``KILL_AFTER`` seconds): daisy
  has no cancel of its own, and no worker is left behind,
- rerunning the same command resumes (finished blocks are skipped).

Its progress lines are ``progress``'s format.
"""

from __future__ import annotations

import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from .. import processes
from .progress import parse_progress

#: Seconds between SIGTERM and SIGKILL of the job's process group.
KILL_AFTER = 1.0
#: The job runs this much "nicer" than napari, so the UI wins the CPU when cores are scarce.
NICENESS = 10


def build_command(input_path, output, parameters_file, workers: int,
                  block_size: tuple[int, ...], overwrite: bool = False,
                  max_retries: int | None = None, guides: dict | None = None) -> list[str]:
    """The CLI's ``segment`` command; ``guides``: mask and seeds paths by role
    (``--mask``, ``--seeds``)."""
    command = [
        sys.executable, "-m", "napari_mutex_watershed.cli", "segment",
        str(input_path), str(output),
        "--params", str(parameters_file),
        "--workers", str(int(workers)),
        "--block-size", *(str(int(b)) for b in block_size),
        "--progress", "json",
    ]
    for role, path in (guides or {}).items():
        command += [f"--{role}", str(path)]
    if max_retries is not None:
        command += ["--max-retries", str(int(max_retries))]
    if overwrite:
        command.append("--overwrite")
    return command


def shell_command(command: list[str]) -> str:
    """The command as a user would type it (console script instead of python -m)."""
    words = list(command)
    if words[1:3] == ["-m", "napari_mutex_watershed.cli"]:
        words = ["napari-mutex-watershed"] + words[3:]
    return shlex.join(words)


@dataclass
class JobEvent:
    """What ``Job.poll`` reports: a progress line (``progress``) or the end (``finished``)."""

    kind: str  # "progress" | "finished"
    progress: dict = field(default_factory=dict)


class Job:
    """One CLI run in its own process group, read by two threads (no Qt here)."""

    def __init__(self, command: list[str], env: dict | None = None, niceness: int = NICENESS):
        self.command = command
        self.lines: queue.Queue = queue.Queue()
        self.stderr_tail: deque[str] = deque(maxlen=200)
        self.error_lines: list[str] = []
        self.progress: list[dict] = []
        self.cancel_requested = False
        self.cancelled_at: float | None = None
        self.killed = False
        self.returncode: int | None = None
        self._eof = 0
        self._exited_at: float | None = None
        self._family: list = []
        if list(command[1:2]) != ["-m"]:
            raise ValueError("a job is a module run: [python, -m, module, args...]")
        # its own process group (Cancel signals all of it), niced (napari keeps the CPU)
        self.process = processes.start_module(
            command[2], command[3:], niceness=niceness, group=True, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", errors="replace", bufsize=1,
        )
        self.pid = self.process.pid
        for stream, name in ((self.process.stdout, "stdout"), (self.process.stderr, "stderr")):
            threading.Thread(target=self._read, args=(stream, name), daemon=True,
                             name=f"mutex-watershed-job-{name}").start()

    # ------------------------------------------------------------------ reader threads
    def _read(self, stream, name: str) -> None:
        """Only reads lines and queues them: never touches Qt or napari."""
        try:
            for line in stream:
                self.lines.put((name, line.rstrip("\n")))
        except (OSError, ValueError):
            pass
        finally:
            self.lines.put((name, None))

    # ------------------------------------------------------------------ main thread
    @property
    def running(self) -> bool:
        return self.returncode is None

    def poll(self) -> list[JobEvent]:
        """Drain the queued lines; report the end once the process exited and the pipes
        are closed (or 2 s after the exit, in case a stray grandchild holds them)."""
        events: list[JobEvent] = []
        if self.returncode is not None:
            return events
        while True:
            try:
                name, line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._eof += 1
            elif name == "stdout":
                message = parse_progress(line)
                if message is not None:
                    message["received"] = time.perf_counter()  # (our clock, not the job's)
                    self.progress.append(message)
                    events.append(JobEvent("progress", message))
            else:
                self.stderr_tail.append(line)
                if line.startswith("error:"):
                    self.error_lines.append(line)
        self._escalate()
        code = self.process.poll()
        if code is not None:
            self._exited_at = self._exited_at or time.monotonic()
            if self._eof >= 2 or time.monotonic() - self._exited_at > 2.0:
                self._finish(code)
                events.append(JobEvent("finished"))
        return events

    def _finish(self, code: int) -> None:
        self.returncode = code
        self._kill_everything()  # whatever is left of the group (nothing, normally)

    def _kill_everything(self) -> None:
        """SIGKILL the process group and every descendant seen when cancel began."""
        self._signal_group(processes.KILL_SIGNAL)
        processes.kill(self._family)

    def cancel(self) -> None:
        """SIGTERM to the whole process group; SIGKILL follows after ``KILL_AFTER`` s."""
        if self.returncode is not None or self.cancel_requested:
            return
        self.cancel_requested = True
        self.cancelled_at = time.monotonic()
        self._family = processes.descendants(self.pid)
        self._signal_group(signal.SIGTERM)

    def _escalate(self) -> None:
        if (self.cancel_requested and not self.killed and self.cancelled_at is not None
                and time.monotonic() - self.cancelled_at >= KILL_AFTER):
            self.killed = True
            self._kill_everything()

    def kill_now(self, grace: float = KILL_AFTER) -> None:
        """Blocking cancel (shutdown): SIGTERM, wait up to ``grace`` s, SIGKILL, reap."""
        if self.returncode is not None:
            return
        self.cancel()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        self.killed = True
        self._finish(self.process.poll() if self.process.poll() is not None else -9)
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass

    def _signal_group(self, sig) -> None:
        """The job's process group (its group id is its pid); Windows, which has no groups:
        its process tree, killed (terminate is a kill there)."""
        if hasattr(os, "killpg"):
            processes.signal_group(self.pid, sig)
        else:
            processes.kill(processes.tree(self.pid))

    def error_message(self) -> str:
        """The job's own one-line message (first ``error: ...`` line), without 'error: '."""
        if self.error_lines:
            return self.error_lines[0][len("error:"):].strip()
        tail = [line for line in self.stderr_tail if line.strip()]
        last = tail[-1].strip() if tail else ""
        return f"the job stopped with exit code {self.returncode}" + (f": {last}" if last else "")
