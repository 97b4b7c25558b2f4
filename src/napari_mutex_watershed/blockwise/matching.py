"""Step 2 of a blockwise run: which fragments continue into which, across block faces.

A block's halo overlaps its neighbours' cores. There, the block's own labels are compared
with the neighbours' fragments, and a pair is reported as
- MAJORITY when each is the other's largest overlap there (so a label one block merged
  cannot pull two of the other's together) and they share at least AGREEMENT of each one's
  voxels;
- CONTAINED when at least CONTAINMENT of one label's voxels there lie in the other: a branch
  that meets its neuron just beyond the face, or a piece that one block split off.
The stitch step joins MAJORITY pairs that both blocks found, each in its own halo, and
CONTAINED pairs that both found as long as they do not join fragments a block kept apart.
Objects that only touch across a face share no voxels in the halo, so they are never paired.
Each pair keeps its overlap: the stitch step cuts the weakest joins when it has to keep two
fragments apart.
"""

from __future__ import annotations

import os

import numpy as np
import zarr

from .fragments import box, grow_clipped, relative
from .plan import BlockwisePlan

#: Least overlap, as a fraction of both labels' voxels, for a MAJORITY pair.
AGREEMENT = 0.2
#: Least overlap, as a fraction of one label's voxels, for a CONTAINED pair ...
CONTAINMENT = 0.5
#: ... and least overlap in voxels, so that specks are not paired.
MIN_CONTAINED_OVERLAP = 20

#: Bits of a pair's kind.
MAJORITY, CONTAINED = 1, 2


def candidate_pairs(ours: np.ndarray, theirs: np.ndarray):
    """(ours, theirs, overlap in voxels, kind) of the label pairs that are MAJORITY or
    CONTAINED pairs or both (0 = nothing). Labels are a block's consecutive local ids 1..n
    (n below 2**32), so counting them by ``bincount`` stays small."""
    ours = np.asarray(ours).ravel().astype(np.int64)
    theirs = np.asarray(theirs).ravel().astype(np.int64)
    both = (ours > 0) & (theirs > 0)
    if not both.any():
        return tuple(np.zeros(0, np.uint64) for _ in range(4))
    ours_sizes, theirs_sizes = np.bincount(ours), np.bincount(theirs)
    # one sort of packed 64-bit keys: several times faster than unique over stacked rows
    keys = (ours[both].astype(np.uint64) << np.uint64(32)) | theirs[both].astype(np.uint64)
    keys, counts = np.unique(keys, return_counts=True)
    u = (keys >> np.uint64(32)).astype(np.int64)
    v = (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)
    majority = counts >= AGREEMENT * np.maximum(ours_sizes[u], theirs_sizes[v])
    # one partner each: a label that a block merged cannot pull two of the other's together
    best_of_ours = np.zeros(len(ours_sizes), counts.dtype)
    np.maximum.at(best_of_ours, u, counts)
    best_of_theirs = np.zeros(len(theirs_sizes), counts.dtype)
    np.maximum.at(best_of_theirs, v, counts)
    majority &= (counts == best_of_ours[u]) & (counts == best_of_theirs[v])
    contained = (counts >= CONTAINMENT * np.minimum(ours_sizes[u], theirs_sizes[v])) & (
        counts >= MIN_CONTAINED_OVERLAP
    )
    kind = np.where(majority, MAJORITY, 0) | np.where(contained, CONTAINED, 0)
    keep = kind > 0
    return tuple(a[keep].astype(np.uint64) for a in (u, v, counts, kind))


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
    found = []
    for other in plan.neighbours(position):
        their_core = plan.core(other)
        lo = [max(b, e) for b, e in zip(their_core.begin, kernel_lo)]
        hi = [min(b, e) for b, e in zip(their_core.end, kernel_hi)]
        if all(a < z for a, z in zip(lo, hi)):
            region = relative(lo, hi, kernel_lo)
            their_base = np.uint64(plan.block_index(other)) * np.uint64(plan.block_voxels)
            theirs = around[region]
            theirs = np.where(theirs > 0, theirs - their_base, np.uint64(0))
            u, v, overlap, kind = candidate_pairs(halo[region], theirs)
            found.append(np.stack([u + base, v + their_base, overlap, kind]))
    pairs = np.concatenate(found, axis=1) if found else np.zeros((4, 0), np.uint64)
    path = plan.match_record(index)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(partial, pairs)
    os.replace(partial, path)
