"""Step 1 of a blockwise run: the even blocks, each segmented alone.

Blocks are coloured like a checkerboard. An even block is segmented with ``context`` voxels of
halo and cropped to its core; the odd blocks around it (step 2, ``odd_blocks``) later take
its labels as seeds. Besides its fragments a block records which of them touch deep inside
it and how strongly the affinities between them repel (``separations``): the stitch step
keeps those apart unless the joins between them are stronger. Fragment sizes leave out the
bands the odd blocks label again, so size and affinity filters count every voxel once.
"""

from __future__ import annotations

import time

import numpy as np

from ..engine import finalize, run_kernel
from ..storage.blocks import open_block_source
from ..storage.chunk_files import open_chunk_files
from .bands import band_owner
from .mask_seeds import Guides, apply_guides, seed_record
from .odd_order import REPULSIVE_TOWARD_ODD, repulsive_toward_odd
from .separations import face_fragments, separations
from .task import GridTask, box, relative

#: Voxels from every inner block face beyond which an even block's separations are trusted.
SEPARATION_MARGIN = 8


class FragmentBlocks(GridTask):
    """The two fragment steps: read the input (any format, like a numpy array) and write
    fragment ids, both through chunk files where the layout allows."""

    def open(self) -> None:
        self.source = open_block_source(self.plan.input_path)
        self.fragments = open_chunk_files(self.plan.fragments_path, "r+")
        self.guides = Guides(self.plan) if self.plan.mask_path or self.plan.seeds_path else None


class EvenBlocks(FragmentBlocks):
    name = "even"
    odd = False

    def process_block(self, position) -> None:
        plan, fragments = self.plan, self.fragments
        block = self.read_with_halo(self.source, position, plan.context, self.guides)
        index, lo, hi = block.index, block.lo, block.hi
        kernel_lo, read_lo = block.kernel_lo, block.read_lo
        toward_odd = repulsive_toward_odd(plan, position, block.kernel_weights, kernel_lo)
        kernel_started = time.perf_counter()
        raw = run_kernel(block.kernel_weights, plan.parameters, block.kernel_seeds)
        kernel_seconds = time.perf_counter() - kernel_started
        block = block._replace(kernel_weights=None)
        raw, seed_of = apply_guides(raw, block)
        in_core = relative(lo, hi, kernel_lo)
        local = finalize(raw[in_core])  # consecutive 1..n, no filters yet
        seeds = seed_record(local, raw[in_core], seed_of, int(local.max(initial=0)),
                            None if seed_of is None else block.kernel_seeds[in_core])
        del raw
        base = np.uint64(index) * np.uint64(plan.ids_per_block)
        fragments[box(lo, hi)] = np.where(local > 0, local.astype(np.uint64) + base, np.uint64(0))

        # voxels the odd blocks label again are counted there
        kept = band_owner(lo, hi, plan.block_size, plan.grid_shape, plan.band) < 0
        n_fragments = int(local.max(initial=0))
        sizes = np.bincount(local[kept], minlength=n_fragments + 1)
        nn_sums = (
            np.bincount(local[kept], weights=block.nn_mean[relative(lo, hi, read_lo)][kept],
                        minlength=n_fragments + 1)
            if block.nn_mean is not None
            else np.zeros(0)
        )
        inner_faces = plan.inner_faces(position)
        # only fragments an odd block can see can be joined, so only theirs are needed
        seen = face_fragments(local, inner_faces, plan.odd_context)
        separated, strength = separations(local, block.core_weights, plan.parameters.offsets,
                                          inner_faces, SEPARATION_MARGIN, wanted=seen)
        self.save_record(index, sizes=sizes, nn_sums=nn_sums, separated=separated,
                         strength=strength, joins=np.zeros((2, 0), np.uint64),
                         overlap=np.zeros(0, np.int64), kernel_seconds=kernel_seconds,
                         **{REPULSIVE_TOWARD_ODD: toward_odd}, **seeds)
