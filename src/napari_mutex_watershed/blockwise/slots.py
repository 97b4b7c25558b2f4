"""At most ``--workers`` blocks computing at once on this machine, across steps.

The odd step is piped after the even step: an odd block starts as soon as the even blocks
around it are done, so nobody waits for the slowest even block and the odd workers start
while the even ones still run. daisy gives each step its own workers, though, so for a
while there are twice ``--workers`` of them. A block takes one of ``--workers`` slots,
file locks that the operating system releases when a process dies, even by SIGKILL, so the
busy processes never exceed what was asked. Cluster workers each have their own machine
and take no slot.

A block's memory is given back to the system before its slot is (``release_freed_memory``):
a worker that waits, for a slot or for the blocks its next block reads, would otherwise keep
the peak of its last block, and with up to twice ``--workers`` workers alive the tree's peak
grew with the number of blocks (docs/blockwise.md, *Memory*).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no limit
    fcntl = None

#: Seconds between two looks for a free slot.
POLL = 0.02


def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS, Windows)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


MALLOC_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Give the memory freed by the last block back to the system. glibc keeps freed blocks
    under its mmap threshold (which grows to 32 MB as large arrays are freed) in its heaps,
    so a process's RSS stays at its largest block's peak until it exits."""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


@contextmanager
def slot(directory: Path | None, count: int):
    """Hold one of ``count`` slots in ``directory`` (None: no limit) for the block; the
    memory it freed goes back to the system before the slot is given back."""
    if directory is None or fcntl is None:
        try:
            yield
        finally:
            release_freed_memory()
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
                yield
            finally:
                release_freed_memory()
                os.close(handle)  # closing releases the lock
            return
        time.sleep(POLL)
