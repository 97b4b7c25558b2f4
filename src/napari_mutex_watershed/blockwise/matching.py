"""Step 2 of a blockwise run: which fragments continue into which, across block faces.

A block's halo overlaps its neighbours' cores. There, the block's own labels are compared
with the neighbours' fragments: a pair is a candidate when each is the other's largest
overlap there (so a label one block merged cannot pull two of the other's together) and they
share at least AGREEMENT of each one's voxels. The stitch step joins a pair only when both
blocks found it, each in its own halo. Objects that only touch across a face share no voxels
in the halo, so they are never joined. Each pair keeps its overlap: the stitch step cuts the
weakest joins when it has to keep two fragments apart.
"""

from __future__ import annotations

import os

import numpy as np
import zarr

from .fragments import box, grow_clipped, relative
from .plan import BlockwisePlan

#: Least overlap, as a fraction of both labels' voxels, for a pair to be a candidate.
AGREEMENT = 0.2


def majority_pairs(ours: np.ndarray, theirs: np.ndarray):
    """(ours, theirs, overlap in voxels) of label pairs that are each other's largest overlap,
    covering at least AGREEMENT of both labels' voxels (0 = nothing). Labels are a block's
    consecutive local ids 1..n (n below 2**32), so counting them by ``bincount`` stays small."""
    ours = np.asarray(ours).ravel().astype(np.int64)
    theirs = np.asarray(theirs).ravel().astype(np.int64)
    both = (ours > 0) & (theirs > 0)
    if not both.any():
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    ours_sizes, theirs_sizes = np.bincount(ours), np.bincount(theirs)
    # one sort of packed 64-bit keys: several times faster than unique over stacked rows
    keys = (ours[both].astype(np.uint64) << np.uint64(32)) | theirs[both].astype(np.uint64)
    keys, counts = np.unique(keys, return_counts=True)
    u = (keys >> np.uint64(32)).astype(np.int64)
    v = (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)
    keep = counts >= AGREEMENT * np.maximum(ours_sizes[u], theirs_sizes[v])
    # one partner each: a label that a block merged cannot pull two of the other's together
    best_of_ours = np.zeros(len(ours_sizes), counts.dtype)
    np.maximum.at(best_of_ours, u, counts)
    best_of_theirs = np.zeros(len(theirs_sizes), counts.dtype)
    np.maximum.at(best_of_theirs, v, counts)
    keep &= (counts == best_of_ours[u]) & (counts == best_of_theirs[v])
    return u[keep].astype(np.uint64), v[keep].astype(np.uint64), counts[keep].astype(np.uint64)


class MatchStep:
    """Picklable block function: stitch one block's halo to its neighbours' cores."""

    def __init__(self, plan_path: str):
        self.plan_path = plan_path
        self._state = None

    def __call__(self, block) -> None:
        if self._state is None:
            plan = BlockwisePlan.load(self.plan_path)
            self._state = plan, zarr.open_array(str(plan.fragments_path), mode="r")
        plan, fragments = self._state
        match_block(plan, fragments, plan.grid_position(block.write_roi))


def match_block(plan: BlockwisePlan, fragments, position) -> None:
    index = plan.block_index(position)
    core = plan.core(position)
    kernel_lo, kernel_hi = grow_clipped(core.begin, core.end, plan.context, plan.shape)
    base = np.uint64(index) * np.uint64(plan.block_voxels)
    unfinished = [p for p in [position, *plan.neighbours(position)]
                  if not plan.block_record(plan.block_index(p)).exists()]
    if unfinished:  # daisy starts a block only after the fragments it reads: never expected
        raise RuntimeError(
            f"match of block {position} started before the fragments of {unfinished}"
        )
    with np.load(plan.block_record(index)) as record:
        halo = record["halo"]  # local ids of this block
    around = fragments[box(kernel_lo, kernel_hi)]
    us, vs, overlaps = [], [], []
    for other in plan.neighbours(position):
        their_core = plan.core(other)
        lo = [max(b, e) for b, e in zip(their_core.begin, kernel_lo)]
        hi = [min(b, e) for b, e in zip(their_core.end, kernel_hi)]
        if all(a < z for a, z in zip(lo, hi)):
            region = relative(lo, hi, kernel_lo)
            their_base = np.uint64(plan.block_index(other)) * np.uint64(plan.block_voxels)
            theirs = around[region]
            theirs = np.where(theirs > 0, theirs - their_base, np.uint64(0))
            u, v, overlap = majority_pairs(halo[region], theirs)
            us.append(u + base)
            vs.append(v + their_base)
            overlaps.append(overlap)
    u, v, overlap = (np.concatenate(a) if a else np.zeros(0, np.uint64)
                     for a in (us, vs, overlaps))
    path = plan.match_record(index)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(partial, np.stack([u, v, overlap]))
    os.replace(partial, path)
