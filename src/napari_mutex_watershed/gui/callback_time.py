"""How long our Qt callbacks hold the main thread: a small, always-on recorder.

napari freezes while the main thread runs one of our callbacks (a timer tick, a slot that
adds a layer, a progress handler). Each callback decorated with ``recorded(name)`` keeps,
per name, its number of calls and its longest run, as CPU time of the main thread
(``time.thread_time``: what the code did, which a busy machine's scheduler cannot inflate)
and as wall time (for diagnosis; wall-clock gaps of the event loop are measured by
``benchmarks/bench_ui_responsiveness.py``, not by tests).

napari's own work that a callback must call and cannot make shorter (adding a Labels
layer: 0.1-0.4 s of vispy set-up under software OpenGL) is wrapped in ``excluded(name)``:
recorded under its own name and left out of every callback around it.

Two clock reads per call: cheap enough to stay on in the plugin.
"""

from __future__ import annotations

import functools
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Record:
    """What one named callback (or excluded section) did since the last ``reset``."""

    calls: int = 0
    longest_cpu: float = 0.0  # seconds of main-thread CPU time in the longest call
    longest_wall: float = 0.0  # seconds of wall time in the longest call (diagnosis)
    total_cpu: float = 0.0

    def add(self, cpu: float, wall: float) -> None:
        self.calls += 1
        self.total_cpu += cpu
        self.longest_cpu = max(self.longest_cpu, cpu)
        self.longest_wall = max(self.longest_wall, wall)


#: name -> Record, for callbacks (``recorded``) and excluded sections (``excluded``).
RECORDS: dict[str, Record] = {}
#: Names recorded by ``excluded`` (kept apart when looking for the longest callback).
EXCLUDED: set[str] = set()
_local = threading.local()


def _stack() -> list:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def reset() -> None:
    """Forget every record (a test or a benchmark measures from here)."""
    RECORDS.clear()


@contextmanager
def _measure(name: str, excluded_section: bool):
    stack = _stack()
    frame = [0.0, 0.0]  # CPU and wall time of excluded sections inside this one
    stack.append(frame)
    cpu, wall = time.thread_time(), time.perf_counter()
    try:
        yield
    finally:
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        stack.pop()
        if excluded_section:
            EXCLUDED.add(name)
            for outer in stack:  # left out of every callback around it
                outer[0] += cpu
                outer[1] += wall
        else:
            cpu, wall = cpu - frame[0], wall - frame[1]
        RECORDS.setdefault(name, Record()).add(cpu, wall)


def recorded(name: str):
    """Decorator: record each call's main-thread time under ``name``."""

    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with _measure(name, excluded_section=False):
                return function(*args, **kwargs)

        return wrapper

    return decorate


def excluded(name: str):
    """Context manager: napari's work inside a callback, recorded apart under ``name``."""
    return _measure(name, excluded_section=True)


def longest(prefix: str = "") -> tuple[str, Record] | None:
    """The callback (not an excluded section) whose name starts with ``prefix`` and whose
    longest call used the most main-thread CPU time; None if none ran."""
    candidates = [(name, record) for name, record in RECORDS.items()
                  if name.startswith(prefix) and name not in EXCLUDED]
    if not candidates:
        return None
    return max(candidates, key=lambda item: item[1].longest_cpu)


def table() -> str:
    """Every record as aligned text, longest CPU time first (test messages, benchmarks)."""
    rows = sorted(RECORDS.items(), key=lambda item: -item[1].longest_cpu)
    lines = [f"{'callback':<32} {'calls':>6} {'longest cpu ms':>15} {'longest wall ms':>16}"]
    for name, record in rows:
        tag = " (napari, excluded)" if name in EXCLUDED else ""
        lines.append(f"{name + tag:<32} {record.calls:>6} {record.longest_cpu * 1000:>15.1f} "
                     f"{record.longest_wall * 1000:>16.1f}")
    return "\n".join(lines)
