"""A daisy worker started by hand or by a cluster scheduler: processes blocks until none are left.

    python -m napari_mutex_watershed.blockwise.worker PLAN.json even|odd|relabel|pyramid-N

It finds the scheduler through the DAISY_CONTEXT environment variable that daisy sets.
"""

from __future__ import annotations

import sys

import daisy

from .fragments import EvenStep
from .pyramid import STEP as PYRAMID
from .pyramid import step_function as pyramid_step
from .relabel import RelabelStep
from .seeded import OddStep

STEP_FUNCTIONS = {"even": EvenStep, "odd": OddStep, "relabel": RelabelStep}


def main(argv=None) -> int:
    plan_path, step = (sys.argv[1:] if argv is None else argv)[:2]
    process = (pyramid_step(plan_path, step) if step.startswith(PYRAMID)
               else STEP_FUNCTIONS[step](plan_path))
    client = daisy.Client()
    while True:
        with client.acquire_block() as block:
            if block is None:
                break
            process(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
