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

from napari_mutex_watershed.gui import callback_time

#: The longest a callback of ours may hold the main thread (CPU seconds).
LIMIT = 0.100


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
