"""Measuring how responsive the napari main thread stays (shared by the GUI tests)."""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager


@contextmanager
def main_thread_ticks(interval_ms: int = 10):
    """Record when a QTimer on the main thread fires: (wall clock, main-thread CPU) lists.

    A full garbage collection of the test process's heap (viewers of earlier tests) stalls
    the main thread for ~0.2 s whatever the plugin does: collect first, and keep the survivors
    out of the collector while measuring.
    """
    from qtpy.QtCore import QTimer

    gc.collect()
    gc.freeze()
    ticks, cpu = [], []
    timer = QTimer()
    timer.setInterval(interval_ms)
    timer.timeout.connect(lambda: (ticks.append(time.perf_counter()), cpu.append(time.thread_time())))
    timer.start()
    try:
        yield ticks, cpu
    finally:
        timer.stop()
        gc.unfreeze()
