"""The process that runs a blockwise job, and cancelling it with everything below it.

daisy checks no signals while it schedules, so the job runs in a child process (``python -m
napari_mutex_watershed.blockwise``) and we turn SIGINT or SIGTERM into a stop of that child
and every worker below it (daisy has no cancel of its own). The child starts before the plan
exists and waits for its path on stdin, so its imports overlap our validation instead of
following it. Only light modules here: the CLI starts the child before anything heavy.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from ..errors import MutexWatershedError


class Cancelled(MutexWatershedError):
    """The run was stopped by a signal; finished blocks are kept for a resume."""


class JobProcess:
    """The job's process, started early; ``run`` hands it a plan, ``abandon`` lets it go.

    The child stays in our process group, so whoever started us can also signal the group.
    """

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "napari_mutex_watershed.blockwise"],
            stdin=subprocess.PIPE, text=True,
        )

    def abandon(self) -> None:
        """No plan after all (the request was invalid): the child reads EOF and exits."""
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)

    def run(self, plan_path: str | Path) -> int:
        """Run the plan; return the job's exit code. On SIGINT/SIGTERM stop it and every
        worker below it and raise Cancelled."""
        cancelled = []

        def cancel(signum, _frame):
            cancelled.append(signum)
            stop_descendants()

        # signal handlers can only be set from the main thread; elsewhere the caller cancels
        on_main = threading.current_thread() is threading.main_thread()
        signals = (signal.SIGINT, signal.SIGTERM) if on_main else ()
        previous = {s: signal.signal(s, cancel) for s in signals}
        try:
            self.process.stdin.write(f"{plan_path}\n")
            self.process.stdin.close()
            code = self.process.wait()
        except BrokenPipeError:  # the child died before it read the plan
            code = self.process.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if cancelled:
            raise Cancelled(
                "cancelled: finished blocks are kept; run the same command again to resume")
        return code


def stop_descendants(grace: float = 0.5) -> None:
    """SIGTERM every process below this one, SIGKILL what is left after ``grace`` seconds."""
    family = psutil.Process().children(recursive=True)
    for process in family:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=grace)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace)
