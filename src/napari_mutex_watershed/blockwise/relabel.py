"""Step 4 of a blockwise run: write final ids, block by block, through the lookup table.

An even block first takes back the bands its odd neighbours labelled again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..storage.chunk_files import open_chunk_files
from .bands import band_boxes, band_key
from .plan import BlockwisePlan
from .task import GridTask, box, relative


class RelabelBlocks(GridTask):
    """Each worker maps the lookup table from disk once."""

    name = "relabel"

    def open(self) -> None:
        plan = self.plan
        self.fragments = open_chunk_files(plan.fragments_path, "r")
        self.output = open_chunk_files(plan.output_path, "r+")
        self.lookup = np.load(plan.lookup_path, mmap_mode="r")
        self.bases = np.load(plan.bases_path)

    def writes_to(self):
        return Path(self.plan.output_path).parent

    def process_block(self, position) -> None:
        core = self.plan.core(position)
        self.output[box(tuple(core.begin), tuple(core.end))] = self.final_ids(position)

    def final_ids(self, position) -> np.ndarray:
        """The block's core in final ids."""
        plan, bases = self.plan, self.bases
        core = plan.core(position)
        lo, hi = tuple(core.begin), tuple(core.end)
        # a block's core holds only its own fragments: index * ids_per_block + local, which
        # is at base + local in the table; 0 (none) stays 0. The ids are < 2**63.
        index = plan.block_index(position)
        ids = self.fragments[box(lo, hi)].view(np.int64)
        at = ids - (index * plan.ids_per_block - int(bases[index]))  # past block 0: 0 -> < 0
        np.maximum(at, 0, out=at)
        if not plan.is_odd(position):
            for neighbour, band, slab_lo, slab_hi in odd_bands(plan, position):
                here = relative(slab_lo, slab_hi, lo)
                at[here] = np.where(band > 0, bases[neighbour] + band, at[here])
        return self.lookup[at]


def odd_bands(plan: BlockwisePlan, position):
    """(odd neighbour index, its labels, lo, hi) of every band an odd neighbour labelled in
    this even block; 0 where the neighbour did not."""
    for axis, step, other in plan.face_neighbours(position):
        for band_axis, band_step, slab_lo, slab_hi in band_boxes(other, plan):
            if band_axis == axis and band_step == -step:
                index = plan.block_index(other)
                with np.load(plan.block_record(index)) as record:
                    band = record[band_key(band_axis, band_step)].astype(np.int64)
                yield index, band, slab_lo, slab_hi
