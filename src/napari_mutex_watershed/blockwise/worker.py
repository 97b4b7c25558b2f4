"""A daisy worker started by hand or by a cluster scheduler: processes blocks until none are left.

    python -m napari_mutex_watershed.blockwise.worker PLAN.json even|odd|relabel|pyramid-N

It finds the scheduler through the DAISY_CONTEXT environment variable that daisy sets.
"""

from __future__ import annotations

import sys

import daisy

from .even_blocks import EvenBlocks
from .odd_blocks import OddBlocks
from .pyramid import STEP as PYRAMID
from .pyramid import PyramidLevel
from .relabel import RelabelBlocks
from .task import BlockTask

GRID_STEPS = {step.name: step for step in (EvenBlocks, OddBlocks, RelabelBlocks)}


def step_named(plan_path: str, name: str) -> BlockTask:
    """``even``, ``odd``, ``relabel`` or ``pyramid-<level>``."""
    if name.startswith(f"{PYRAMID}-"):
        return PyramidLevel(plan_path, int(name.rsplit("-", 1)[1]))
    return GRID_STEPS[name](plan_path)


def main(argv=None) -> int:
    plan_path, step = (sys.argv[1:] if argv is None else argv)[:2]
    process = step_named(plan_path, step)
    client = daisy.Client()
    while True:
        with client.acquire_block() as block:
            if block is None:
                break
            process(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
