"""Slots: at most ``count`` blocks compute at once across worker processes, and a killed
process gives its slot back. Holders hold until told to let go, so nothing here depends on
how fast a busy machine runs them."""

import select
import signal
import subprocess
import sys
import threading

import pytest

from napari_mutex_watershed.blockwise.slots import slot
from napari_mutex_watershed.freed_memory import MALLOC_TRIM

#: Generous bounds for a busy machine; none of them is waited out when the code works.
PATIENCE = 60

HOLD = """
import sys
from pathlib import Path
from napari_mutex_watershed.blockwise.slots import slot
with slot(Path(sys.argv[1]), 2):
    print("in", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


def _hold(directory):
    return subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def _entered(holder, timeout) -> bool:
    ready, _, _ = select.select([holder.stdout], [], [], timeout)
    return bool(ready) and holder.stdout.readline().strip() == "in"


def test_no_more_than_count_processes_hold_a_slot(tmp_path):
    first, second = _hold(tmp_path), _hold(tmp_path)
    assert _entered(first, PATIENCE) and _entered(second, PATIENCE)
    third = _hold(tmp_path)
    # both slots are taken: the third waits (it would be in at once if it did not)
    assert not _entered(third, 1.0)
    first.stdin.close()  # gives its slot back
    assert first.wait(timeout=PATIENCE) == 0
    assert _entered(third, PATIENCE)
    for holder in (second, third):
        holder.stdin.close()
        assert holder.wait(timeout=PATIENCE) == 0


def test_a_killed_holder_frees_its_slot(tmp_path):
    holders = [_hold(tmp_path) for _ in range(2)]
    assert all(_entered(holder, PATIENCE) for holder in holders)
    holders[0].send_signal(signal.SIGKILL)
    holders[0].wait(timeout=PATIENCE)
    taken = threading.Event()

    def take():
        with slot(tmp_path, 2):
            taken.set()

    threading.Thread(target=take, daemon=True).start()
    assert taken.wait(PATIENCE)
    holders[1].kill()
    holders[1].wait(timeout=PATIENCE)


def test_no_directory_means_no_limit():
    """Cluster workers take no slot: with no directory even a limit of 1 lets two in."""
    both = threading.Event()

    def nested():
        with slot(None, 1), slot(None, 1):
            both.set()

    threading.Thread(target=nested, daemon=True).start()
    assert both.wait(PATIENCE)


FREE_IN_SLOT = """
import sys
import time
from pathlib import Path
import numpy as np
import psutil
from napari_mutex_watershed.blockwise.slots import slot
directory = None if sys.argv[1] == "none" else Path(sys.argv[1])
idle_trim_seconds, then = float(sys.argv[2]), sys.argv[3]
rss = lambda: psutil.Process().memory_info().rss
with slot(directory, 1, idle_trim_seconds):
    # 256 MB in pieces under glibc's mmap threshold, freed with holes: RSS keeps them
    pieces = [np.ones(8192) for _ in range(4000)]
    kept = pieces[::50]
    del pieces
    during = rss()
if then == "next":  # the next block at once
    with slot(directory, 1, idle_trim_seconds):
        print(during - rss())
else:  # idle: wait until it is given back (or 60 s)
    deadline = time.monotonic() + 60
    while during - rss() < 200e6 and time.monotonic() < deadline:
        time.sleep(0.02)
    print(during - rss())
"""


def _freed(directory, idle_trim_seconds, then) -> int:
    return int(subprocess.run([sys.executable, "-c", FREE_IN_SLOT, directory,
                               str(idle_trim_seconds), then], check=True, capture_output=True,
                              text=True, timeout=PATIENCE * 2).stdout)


@pytest.mark.skipif(MALLOC_TRIM is None, reason="no glibc malloc_trim")
@pytest.mark.parametrize("limited", [True, False])
def test_an_idle_worker_gives_its_memory_back(tmp_path, limited):
    """A worker waiting for its next block does not keep the peak of its last one."""
    assert _freed(str(tmp_path) if limited else "none", 0.1, "idle") > 200e6


@pytest.mark.skipif(MALLOC_TRIM is None, reason="no glibc malloc_trim")
@pytest.mark.parametrize("limited", [True, False])
def test_a_worker_that_goes_on_at_once_keeps_its_memory(tmp_path, limited):
    """The next block reuses what the last one freed (no fresh pages to fault in): nothing
    is given back when it starts before the idle delay is over."""
    assert _freed(str(tmp_path) if limited else "none", PATIENCE, "next") < 50e6
