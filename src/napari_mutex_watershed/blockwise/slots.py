"""At most ``--workers`` blocks computing at once on this machine, across steps.

The odd step is piped after the even step: an odd block starts as soon as the even blocks
around it are done, so nobody waits for the slowest even block and the odd workers start
while the even ones still run. daisy gives each step its own workers, though, so for a
while there are twice ``--workers`` of them. A block takes one of ``--workers`` slots,
file locks that the operating system releases when a process dies, even by SIGKILL, so the
busy processes never exceed what was asked. Cluster workers each have their own machine
and take no slot.

A worker keeps the memory a block frees for its next block and gives it back to the
system once it has waited ``IDLE_TRIM_SECONDS``, for a slot or for the blocks its next
block reads (``freed_memory``): with up to twice ``--workers`` workers alive, waiting
workers that kept their last block's peak made the tree's peak grow with the number of
blocks (docs/blockwise.md, *Memory*).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

from ..freed_memory import IdleTrim

try:
    import fcntl
except ImportError:  # not POSIX: no limit
    fcntl = None

#: Seconds between two looks for a free slot.
POLL = 0.02
#: A worker idle this long after a block gives the memory it freed back to the system.
IDLE_TRIM_SECONDS = 0.1


_idle_trim = IdleTrim(IDLE_TRIM_SECONDS)


@contextmanager
def _block(idle_trim_seconds: float):
    _idle_trim.busy()
    try:
        yield
    finally:
        _idle_trim.idle(idle_trim_seconds)


@contextmanager
def slot(directory: Path | None, count: int, idle_trim_seconds: float = IDLE_TRIM_SECONDS):
    """Hold one of ``count`` slots in ``directory`` (None: no limit) for the block; the
    memory it freed goes back to the system if the process is still idle
    ``idle_trim_seconds`` later."""
    if directory is None or fcntl is None:
        with _block(idle_trim_seconds):
            yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    while True:
        for index in range(count):
            handle = os.open(directory / f"{index}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                continue
            try:
                with _block(idle_trim_seconds):
                    yield
            finally:
                os.close(handle)  # closing releases the lock
            return
        time.sleep(POLL)
