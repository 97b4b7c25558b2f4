"""Memory that worker processes free between two kernel calls: kept for the next call while
they are busy, given back to the system once they are idle.

By default glibc maps every large array afresh and unmaps it when freed, so each kernel
call faults all its pages in again: 0.3 s of system time in each 3 s block of a blockwise
run. With ``REUSE_FREED_MEMORY`` in a worker's environment (``GLIBC_TUNABLES``, read when
the process starts) large arrays come from the heap, which keeps what is freed. A worker
that then waits would hold its last call's peak, so ``IdleTrim`` gives it back once the
worker has been idle a while. Both do nothing outside glibc (musl, macOS, Windows).
"""

from __future__ import annotations

import ctypes
import os
import threading
from contextlib import contextmanager

#: glibc settings for worker processes: large arrays from the heap, kept when freed until
#: trimmed. 8 to 13 % less CPU per block on 256^3 neuron crops (docs/blockwise.md, *Speed*).
REUSE_FREED_MEMORY = ("glibc.malloc.mmap_threshold=4294967295:"
                      "glibc.malloc.trim_threshold=4294967295")
TUNABLES_ENV = "GLIBC_TUNABLES"


def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS, Windows)."""
    try:  # the symbols the process has loaded, which include its C library's
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


MALLOC_TRIM = _malloc_trim()


def worker_environment() -> dict[str, str]:
    """What to add to a worker's environment: the reuse settings, unless the user tuned
    malloc themselves."""
    return {} if TUNABLES_ENV in os.environ else {TUNABLES_ENV: REUSE_FREED_MEMORY}


@contextmanager
def workers_keep_freed_memory():
    """Workers started meanwhile reuse freed memory, unless the user tuned malloc; the
    process's own environment is as it was afterwards (a run may be a library call)."""
    added = worker_environment()
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def release_freed_memory() -> None:
    """Give the memory this process freed back to the system (glibc's ``malloc_trim``)."""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


class IdleTrim:
    """``release_freed_memory`` due ``seconds`` after a call ends unless the next one starts
    first. A timer thread: it runs while the process waits on a pipe, a lock or daisy (none
    holds the GIL); never during a kernel call, which holds it."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._timer: threading.Timer | None = None

    def busy(self) -> None:
        """A call starts: keep what is freed for it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def idle(self, seconds: float | None = None) -> None:
        """A call ended: give its memory back unless another starts within ``seconds``."""
        self.busy()
        self._timer = threading.Timer(self.seconds if seconds is None else seconds,
                                      release_freed_memory)
        self._timer.daemon = True
        self._timer.start()

    @contextmanager
    def call(self):
        """One call: ``busy`` before it, ``idle`` after it."""
        self.busy()
        try:
            yield
        finally:
            self.idle()
