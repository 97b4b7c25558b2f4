"""Timeouts for waits on other processes, scaled for how busy the machine is.

A test that waits for another process (a job, a worker, a result) waits on a condition and
ends as soon as it holds; the timeout only says when to give up. CI shares 2 cores with other
work (load 5-8), where everything takes several times longer than on an idle machine, so a
timeout is given as what an idle machine needs and grows with the load.
"""

from __future__ import annotations

import os
import time


def load_per_core() -> float:
    """Runnable processes per core over the last minute (0 where it cannot be read)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return 0.0


def patience(seconds: float) -> float:
    """``seconds`` (enough on an idle machine) times 3, plus that again per runnable
    process per core: generous, since a timeout only matters when something is wrong."""
    return seconds * (3.0 + load_per_core())


def patience_ms(seconds: float) -> int:
    """``patience`` in milliseconds, for ``qtbot.waitUntil``."""
    return int(patience(seconds) * 1000)


def running(process) -> bool:
    """True while ``process`` (psutil.Process) runs: a zombie (ended, not yet reaped by the
    process that adopted it) has stopped."""
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(processes, seconds: float) -> list:
    """Wait until none of ``processes`` runs, for at most ``patience(seconds)``; returns
    those still running then (a leak)."""
    import psutil

    deadline = time.monotonic() + patience(seconds)
    while True:
        left = [p for p in processes if running(p)]
        if not left or time.monotonic() > deadline:
            return left
        psutil.wait_procs(left, timeout=0.2)  # returns as soon as they end
