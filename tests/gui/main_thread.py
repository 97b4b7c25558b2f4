"""How much our code holds the napari main thread (shared by the GUI tests).

Responsiveness is judged by what our callbacks do on the main thread (their CPU time, as
recorded by ``gui.callback_time``), not by wall-clock gaps between timer ticks: on a busy
machine the OS scheduler makes such gaps whatever the plugin does. The wall-clock figures
are in ``benchmarks/bench_ui_responsiveness.py``.
"""

from __future__ import annotations

import gc
import os
from contextlib import contextmanager

from patience import load_per_core

from napari_mutex_watershed.gui import callback_time

#: The longest a callback of ours may hold the main thread (CPU seconds).
LIMIT = 0.100


def napari_step_limit() -> float:
    """The longest one step of napari's own layer addition (``gui.layers``) may hold the main
    thread: twice ``LIMIT`` on an idle machine, grown with the load. That work (vispy's
    set-up under software OpenGL) is napari's, and its CPU time grows with a shared or slow
    machine: one step took 56 ms idle and 114 ms beside three busy processes and two workers
    on 2 cores, and 146 ms in a fresh clone's CI on a day the same machine ran everything
    about 1.3 to 1.5 times slower (load 0.37 a core)."""
    return 2 * LIMIT * (1.0 + load_per_core())


@contextmanager
def recording_callbacks():
    """Our callbacks' records from here on (``callback_time.RECORDS``).

    A full garbage collection of the test process's heap (viewers of earlier tests) takes
    ~0.2 s of the main thread whatever the plugin does, inside whichever callback it falls
    in: collect first, and keep the survivors out of the collector while measuring.
    """
    gc.collect()
    gc.freeze()
    callback_time.reset()
    try:
        yield callback_time.RECORDS
    finally:
        gc.unfreeze()


def assert_callbacks_short(what: str, limit: float = LIMIT) -> None:
    """No callback of ours (napari's own layer additions aside) held the main thread for
    ``limit`` seconds of CPU time or more."""
    name, record = callback_time.longest()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    assert record.longest_cpu < limit, (
        f"{what}: {name} held the main thread for {record.longest_cpu * 1000:.0f} ms of CPU "
        f"time ({record.longest_wall * 1000:.0f} ms of wall time; load average {load:.1f} on "
        f"{os.cpu_count()} cores)\n{callback_time.table()}"
    )
