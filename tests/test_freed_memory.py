"""freed_memory: worker processes started with the reuse settings keep what a call frees for
the next call, and give it back once idle."""

import os
import subprocess
import sys

import pytest

from napari_mutex_watershed.freed_memory import (
    MALLOC_TRIM,
    REUSE_FREED_MEMORY,
    TUNABLES_ENV,
    worker_environment,
    workers_keep_freed_memory,
)

#: Generous bounds for a busy machine; none is waited out when the code works.
PATIENCE = 60

#: Minor page faults of four 100 MB arrays made and freed one after the other, after a
#: first one.
FAULTS = """
import resource
import numpy as np
array = np.ones(100_000_000 // 8)
del array
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    array = np.ones(100_000_000 // 8)
    del array
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(env: dict) -> int:
    return int(subprocess.run([sys.executable, "-c", FAULTS], env=env, check=True,
                              capture_output=True, text=True, timeout=PATIENCE).stdout)


@pytest.mark.skipif(MALLOC_TRIM is None, reason="not glibc")
def test_a_worker_with_the_settings_reuses_what_it_freed(monkeypatch):
    """The pages of the first array serve the next four: (nearly) no new page faults, where
    each array faults all its pages in afresh (about 25,000 pages, fewer when the system
    gives huge pages) without the settings."""
    monkeypatch.delenv(TUNABLES_ENV, raising=False)
    plain = _faults(dict(os.environ))
    reusing = _faults({**os.environ, **worker_environment()})
    assert plain > 100 and reusing < plain / 10, (reusing, plain)


def test_the_users_own_malloc_settings_win(monkeypatch):
    monkeypatch.delenv(TUNABLES_ENV, raising=False)
    assert worker_environment() == {TUNABLES_ENV: REUSE_FREED_MEMORY}
    monkeypatch.setenv(TUNABLES_ENV, "glibc.malloc.arena_max=2")
    assert worker_environment() == {}


def test_workers_reuse_freed_memory_unless_the_user_tuned_malloc(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    with workers_keep_freed_memory():
        assert os.environ["GLIBC_TUNABLES"] == REUSE_FREED_MEMORY
    assert "GLIBC_TUNABLES" not in os.environ
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    with workers_keep_freed_memory():
        assert os.environ["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"
    assert os.environ["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"


#: One call that leaves 256 MB of freed pieces under glibc's mmap threshold (with holes:
#: RSS keeps them), then either the next call at once or a wait; prints what was given back.
FREE_IN_CALL = """
import sys
import time
import numpy as np
import psutil
from napari_mutex_watershed.freed_memory import IdleTrim
idle = IdleTrim(float(sys.argv[1]))
rss = lambda: psutil.Process().memory_info().rss
with idle.call():
    pieces = [np.ones(8192) for _ in range(4000)]
    kept = pieces[::50]
    del pieces
    during = rss()
if sys.argv[2] == "next":  # the next call at once
    with idle.call():
        print(during - rss())
else:  # idle: wait until it is given back (or 60 s)
    deadline = time.monotonic() + 60
    while during - rss() < 200e6 and time.monotonic() < deadline:
        time.sleep(0.02)
    print(during - rss())
"""


def _freed(idle_seconds, then) -> int:
    return int(subprocess.run([sys.executable, "-c", FREE_IN_CALL, str(idle_seconds), then],
                              check=True, capture_output=True, text=True,
                              timeout=PATIENCE * 2).stdout)


@pytest.mark.skipif(MALLOC_TRIM is None, reason="no glibc malloc_trim")
def test_an_idle_worker_gives_its_memory_back():
    """A blockwise worker waiting for its next block does not keep the peak of its last."""
    assert _freed(0.1, "idle") > 200e6


@pytest.mark.skipif(MALLOC_TRIM is None, reason="no glibc malloc_trim")
def test_a_worker_that_goes_on_at_once_keeps_its_memory():
    """The next call reuses what the last one freed (no fresh pages to fault in): nothing
    is given back when it starts before the idle delay is over."""
    assert _freed(PATIENCE, "next") < 50e6
