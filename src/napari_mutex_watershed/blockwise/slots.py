"""At most ``--workers`` blocks computing at once on this machine, across steps.

The odd step is piped after the even step: an odd block starts as soon as the even blocks
around it are done, so nobody waits for the slowest even block and the odd workers start
while the even ones still run. daisy gives each step its own workers, though, so for a
while there are twice ``--workers`` of them. A block takes one of ``--workers`` slots,
file locks that the operating system releases when a process dies, even by SIGKILL, so the
busy processes never exceed what was asked. Cluster workers each have their own machine
and take no slot.
"""

from __future__ import annotations

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


@contextmanager
def slot(directory: Path | None, count: int):
    """Hold one of ``count`` slots in ``directory`` (None: no limit) for the block."""
    if directory is None or fcntl is None:
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
                yield
            finally:
                os.close(handle)  # closing releases the lock
            return
        time.sleep(POLL)
