"""At most ``--workers`` blocks computing at once on this machine, across steps.

The odd step is piped after the even step: an odd block starts as soon as the even blocks
around it are done, so nobody waits for the slowest even block and the odd workers start
while the even ones still run. daisy gives each step its own workers, though, so for a
while there are twice ``--workers`` of them. A block takes one of ``--workers`` slots,
file locks that the operating system releases when a process dies, even by SIGKILL, so the
busy processes never exceed what was asked. Cluster workers each have their own machine
and take no slot.

Workers keep the memory a block frees for their next block (``WORKER_MALLOC``): otherwise
glibc maps every large array afresh and the kernel faults its pages in again, 0.3 s of
system time in each 3 s block. A worker that waits, for a slot or for the blocks its next
block reads, gives it back to the system (``release_freed_memory``) once it has waited
``IDLE_TRIM_SECONDS``: with up to twice ``--workers`` workers alive, waiting workers that
kept their last block's peak made the tree's peak grow with the number of blocks
(docs/blockwise.md, *Memory*).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no limit
    fcntl = None

#: Seconds between two looks for a free slot.
POLL = 0.02
#: A worker idle this long after a block gives the memory it freed back to the system.
IDLE_TRIM_SECONDS = 0.1
#: glibc settings for the workers of a run (``GLIBC_TUNABLES``, unless the user set their
#: own): large arrays from the heap, which keeps what is freed until trimmed.
#: 8 to 13 % less CPU per block on 256^3 neuron crops (docs/blockwise.md, *Speed*).
WORKER_MALLOC = ("glibc.malloc.mmap_threshold=4294967295:"
                 "glibc.malloc.trim_threshold=4294967295")


def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS, Windows)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


MALLOC_TRIM = _malloc_trim()


@contextmanager
def workers_keep_freed_memory():
    """Workers started meanwhile reuse freed memory, unless the user tuned malloc; the
    process's own environment is as it was afterwards (a run may be a library call)."""
    if "GLIBC_TUNABLES" in os.environ:
        yield
        return
    os.environ["GLIBC_TUNABLES"] = WORKER_MALLOC
    try:
        yield
    finally:
        os.environ.pop("GLIBC_TUNABLES", None)


def release_freed_memory() -> None:
    """Give the memory freed by the last block back to the system. glibc keeps freed blocks
    under its mmap threshold (which grows to 32 MB as large arrays are freed) in its heaps,
    so a process's RSS stays at its largest block's peak until it exits."""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


class _IdleTrim:
    """A trim of freed memory, due ``IDLE_TRIM_SECONDS`` after a block unless the next one
    starts first (daisy waits for blocks without holding the GIL, so the timer runs)."""

    def __init__(self):
        self._timer: threading.Timer | None = None

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def schedule(self, seconds: float) -> None:
        self.cancel()
        self._timer = threading.Timer(seconds, release_freed_memory)
        self._timer.daemon = True
        self._timer.start()


_idle_trim = _IdleTrim()


@contextmanager
def _block(idle_trim_seconds: float):
    _idle_trim.cancel()
    try:
        yield
    finally:
        _idle_trim.schedule(idle_trim_seconds)


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
