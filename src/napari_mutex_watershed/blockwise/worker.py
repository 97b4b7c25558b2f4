"""A daisy worker: processes blocks until none are left.

    python -m napari_mutex_watershed.blockwise.worker PLAN.json even|odd|relabel|pyramid-N

is what a cluster scheduler starts (``cluster.ClusterWorkerLauncher``); it finds the
scheduler through the DAISY_CONTEXT environment variable that daisy sets. Local workers are
forked from the job's zygote (``zygote.ForkedWorker``), or, without one, run ``LocalWorker``
in the process daisy starts.
"""

from __future__ import annotations

import sys

import daisy

from ..processes import exit_at_once
from .even_blocks import EvenBlocks
from .fatal import run_stopped
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


def serve(step: BlockTask) -> None:
    """Process the blocks daisy hands out until none are left or the run stops for an
    input error; a block that raises ends the worker (daisy has marked it failed)."""
    if run_stopped(step.plan.work_dir):  # started while the job stops the others
        return
    client = daisy.Client()
    while True:
        with client.acquire_block() as block:
            if block is None:
                return
            step(block)
        if run_stopped(step.plan.work_dir):
            return


class LocalWorker:
    """0-argument daisy worker function of a local run: serves the step, then exits without
    the interpreter's teardown (``exit_at_once``), which took 0.1 s of a worker's exit while
    the run waited for its last worker."""

    def __init__(self, step: BlockTask):
        self.step = step

    def __call__(self) -> None:
        serve(self.step)
        exit_at_once(0)


def main(argv=None) -> int:
    plan_path, step = (sys.argv[1:] if argv is None else argv)[:2]
    serve(step_named(plan_path, step))
    return 0


if __name__ == "__main__":
    sys.exit(main())
