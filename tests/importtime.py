"""Reading ``python -X importtime`` output (``PYTHONPROFILEIMPORTTIME=1``): which modules a
process imported and how many Pythons started, for the tests that hold a run to importing
only what it needs."""

from __future__ import annotations


def imported(text: str) -> list[str]:
    """The modules named in ``python -X importtime`` lines, once per process that imported
    each."""
    return [line.rsplit("|", 1)[1].strip() for line in text.splitlines()
            if line.startswith("import time:") and line.count("|") == 2]


def python_processes(text: str) -> int:
    """How many Pythons started (each imports site)."""
    return sum(line.rstrip().endswith("| site") for line in text.splitlines())
