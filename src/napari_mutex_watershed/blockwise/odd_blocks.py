"""Step 2 of a blockwise run: the odd blocks, seeded by the even blocks around them.

Odd blocks run once the even blocks are done, with a wider halo (``odd_context``). In
that halo the even labels are seeds: edges inside one label become certain attraction and
edges between two labels of one block certain repulsion, so the block continues what its
neighbours decided instead of deciding it again. Each of its fragments joins every even label
it takes in, weighted by the overlap. In the bands next to its faces (``bands``) it takes no
seeds and labels the even voxels itself; those labels go to its record, because two odd
blocks may write into one even block's chunk at the same time.
"""

from __future__ import annotations

import time

import numpy as np

from ..engine import edge_slices, finalize, run_kernel, smallest_label_dtype
from .bands import band_boxes, band_key, band_owner
from .even_blocks import FragmentBlocks
from .mask_seeds import apply_guides, seed_record
from .plan import BlockwisePlan
from .separations import separations
from .task import box, relative

#: Weight of a certain edge: larger than any affinity minus bias.
CERTAIN = 1e3
#: Voxels from every inner face beyond which an odd block's separations are trusted: fewer
#: than an even block's SEPARATION_MARGIN, because its halo held its neighbours' labels.
ODD_SEPARATION_MARGIN = 2


def even_labels(plan: BlockwisePlan, fragments, lo, hi) -> np.ndarray:
    """The even fragment ids in the box [lo, hi), read block by block: other odd blocks may be
    writing their own chunks meanwhile."""
    labels = np.zeros(tuple(b - a for a, b in zip(lo, hi)), np.uint64)
    even = plan.even_positions_in(lo, hi)
    unfinished = [p for p in even if not plan.block_record(plan.block_index(p)).exists()]
    if unfinished:  # the odd step starts after the even step: never expected
        raise RuntimeError(f"odd block started before the even blocks {unfinished}")
    for position in even:
        core = plan.core(position)
        part_lo = tuple(max(a, c) for a, c in zip(lo, core.begin))
        part_hi = tuple(min(b, c) for b, c in zip(hi, core.end))
        labels[relative(part_lo, part_hi, lo)] = fragments[box(part_lo, part_hi)]
    return labels


def seed_weights(weights, seeds, offsets, ids_per_block) -> None:
    """Seeds through the weights, not the kernel's seeds: there every two seed ids are mutex,
    but labels of two blocks may be one object. The block of each seed, plus one (0: no
    seed), in the smallest integers that hold it: one comparison per edge tells both ends
    seeded by one block (27 to 31 ms an odd block at 256^3, against 41 to 52)."""
    block = seeds // np.uint64(ids_per_block)
    top = int(block.max(initial=0)) + 2
    kind = np.uint16 if top < 2**16 else np.uint32 if top < 2**32 else np.uint64
    block_of = np.where(seeds > 0, block + np.uint64(1), np.uint64(0)).astype(kind)
    del block
    for channel, offset in enumerate(offsets):
        s, t = edge_slices(offset, seeds.shape)
        one_block = block_of[s] == block_of[t]
        one_block &= block_of[s] > 0
        same = seeds[s] == seeds[t]
        w = weights[channel][s]
        w[one_block & same] = CERTAIN
        w[one_block & ~same] = -CERTAIN


def seed_joins(raw, seeds, own_ids):
    """(fragment, seed, overlap) joins: every fragment with the seeds it took in; a segment of
    the halo alone joins the seeds it took in with each other. ``own_ids`` maps the kernel's
    labels of the block's fragments to their ids (0 for the others). Background (kernel label
    0: seed voxels cut off from the rest of their label, without an attractive edge) joins
    nothing."""
    taken = (seeds > 0) & (raw > 0)
    if raw.size >= 2**32:  # plan_run refuses such blocks
        raise ValueError("kernel labels must fit in 32 bits")
    # one integer key per (kernel label, seed): a sort of integers, not of rows
    taken_seeds = seeds[taken]
    seed_ids = np.unique(taken_seeds)
    seed_rank = np.searchsorted(seed_ids, taken_seeds).astype(np.uint64)
    keys, counts = np.unique((raw[taken].astype(np.uint64) << np.uint64(32)) | seed_rank,
                             return_counts=True)
    pairs = np.stack([keys >> np.uint64(32), seed_ids[keys & np.uint64(0xFFFFFFFF)]])
    ours = own_ids(pairs[0])
    joins = [np.stack([ours[ours > 0], pairs[1][ours > 0]])]
    overlap = [counts[ours > 0]]
    halo = ours == 0
    raw_halo, seed_halo, count_halo = pairs[0][halo], pairs[1][halo], counts[halo]
    first = np.ones(len(raw_halo), bool)  # sorted by kernel label
    first[1:] = raw_halo[1:] != raw_halo[:-1]
    head = np.maximum.accumulate(np.where(first, np.arange(len(raw_halo)), 0))
    rest = ~first
    joins.append(np.stack([seed_halo[head][rest], seed_halo[rest]]))
    overlap.append(np.minimum(count_halo[head][rest], count_halo[rest]))
    return np.concatenate(joins, axis=1).astype(np.uint64), np.concatenate(overlap).astype(np.int64)


class OddBlocks(FragmentBlocks):
    name = "odd"
    odd = True

    def reach(self) -> tuple[int, ...]:
        """An odd block reads the even labels in its halo: it waits for those blocks."""
        return self.plan.odd_context

    def process_block(self, position) -> None:
        plan, fragments = self.plan, self.fragments
        block = self.read_with_halo(self.source, position, plan.odd_context, self.guides)
        index, lo, hi = block.index, block.lo, block.hi
        kernel_lo, kernel_hi = block.kernel_lo, block.kernel_hi
        kernel_weights = block.kernel_weights
        owner = band_owner(kernel_lo, kernel_hi, plan.block_size, plan.grid_shape, plan.band)
        seeds = even_labels(plan, fragments, kernel_lo, kernel_hi)
        seeds[owner >= 0] = 0  # bands are labelled again, by this block or another
        seed_weights(kernel_weights, seeds, plan.parameters.offsets, plan.ids_per_block)
        kernel_started = time.perf_counter()
        raw = run_kernel(kernel_weights, plan.parameters, block.kernel_seeds)
        kernel_seconds = time.perf_counter() - kernel_started
        del kernel_weights
        block = block._replace(kernel_weights=None)
        raw, seed_of = apply_guides(raw, block)

        in_core = relative(lo, hi, kernel_lo)
        mine = owner == index
        mine[in_core] = True
        # consecutive ids 1..n over the core and the bands (kernel label 0 is background), and
        # the table from kernel label (at most raw.size) to id for the joins below; uint32,
        # as raw.size is (plan_run refuses larger boxes): every pass below reads half the
        # bytes of int64 (about 20 ms an odd block at 256^3, docs/blockwise.md)
        values = raw[mine]
        numbered = finalize(values)
        n_fragments = int(numbered.max(initial=0))
        table = np.zeros(raw.size + 1, np.uint32)
        table[values] = numbered
        local = np.zeros(raw.shape, np.uint32)
        local[mine] = numbered
        user_seeds = seed_record(numbered, values, seed_of, n_fragments, None if seed_of is None
                                 else block.kernel_seeds[in_core])
        del values, numbered
        base = np.uint64(index) * np.uint64(plan.ids_per_block)
        core_local = local[in_core]
        fragments[box(lo, hi)] = np.where(core_local > 0, core_local.astype(np.uint64) + base,
                                          np.uint64(0))
        band_dtype = smallest_label_dtype(n_fragments)
        bands = {band_key(axis, step):
                 local[relative(slab_lo, slab_hi, kernel_lo)].astype(band_dtype)
                 for axis, step, slab_lo, slab_hi in band_boxes(position, plan)}

        def own_ids(labels):
            """Kernel labels -> this block's fragment ids, 0 for segments of the halo alone."""
            ours = table[labels]
            return np.where(ours > 0, ours.astype(np.uint64) + base, np.uint64(0))

        joins, overlap = seed_joins(raw, seeds, own_ids)
        # only fragments that took a seed join anything (joins between seeds hold no own id)
        took = joins[0][(joins[0] > base) & (joins[0] <= base + np.uint64(n_fragments))]
        joined = np.zeros(n_fragments + 1, bool)
        joined[(took - base).astype(np.int64)] = True
        sizes = np.bincount(local[mine], minlength=n_fragments + 1)
        in_read = relative(kernel_lo, kernel_hi, block.read_lo)
        nn_sums = (
            np.bincount(local[mine], weights=block.nn_mean[in_read][mine],
                        minlength=n_fragments + 1)
            if block.nn_mean is not None
            else np.zeros(0)
        )
        inner_faces = plan.inner_faces(position)
        separated, strength = separations(core_local, block.core_weights,
                                          plan.parameters.offsets, inner_faces,
                                          ODD_SEPARATION_MARGIN, wanted=joined)
        self.save_record(index, sizes=sizes, nn_sums=nn_sums, separated=separated,
                         strength=strength, joins=joins, overlap=overlap,
                         kernel_seconds=kernel_seconds, **bands, **user_seeds)
