"""Step 4 of a blockwise run: write final ids, block by block, through the lookup table."""

from __future__ import annotations

import numpy as np
import zarr

from .fragments import box
from .plan import BlockwisePlan


class RelabelStep:
    """Picklable block function; each worker maps the lookup table from disk once."""

    def __init__(self, plan_path: str):
        self.plan_path = plan_path
        self._state = None

    def _open(self):
        if self._state is None:
            plan = BlockwisePlan.load(self.plan_path)
            self._state = (
                plan,
                zarr.open_array(str(plan.fragments_path), mode="r"),
                zarr.open_array(plan.output_path, mode="r+"),
                np.load(plan.lookup_path, mmap_mode="r"),
                np.load(plan.bases_path),
            )
        return self._state

    def __call__(self, block) -> None:
        plan, fragments, output, lookup, bases = self._open()
        position = plan.grid_position(block.write_roi)
        index = plan.block_index(position)
        core = plan.core(position)
        ids = fragments[box(core.begin, core.end)]
        local = (ids - np.uint64(index * plan.block_voxels)).astype(np.int64)
        local[ids == 0] = 0
        base = int(bases[index])
        table = np.array(lookup[base : base + int(local.max()) + 1])
        table[0] = 0  # position `base` belongs to the previous block; local 0 is background
        output[box(core.begin, core.end)] = table[local]
