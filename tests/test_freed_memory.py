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
