"""Step 1 of a blockwise run: fragments of one block, and how they continue next door.

Each block is segmented with ``context`` voxels of halo and cropped to its core. Blocks run
in daisy's conflict-free waves, so when a block runs, each neighbour is either finished or not
started. Over every finished neighbour's core the block compares its own halo labels with the
neighbour's fragments: a pair is stitched when each covers at least half of the other's voxels
there (mutual majority). Objects that only touch across a face share no voxels in the halo, so
they are never stitched, and a pair that merely overlaps a little does not spread a merge.
"""

from __future__ import annotations

import os
import time
import zlib

import numpy as np
import zarr

from ..engine import edge_weights, finalize, run_kernel
from ..engine.weights import check_affinities
from .plan import BlockwisePlan


def box(lo, hi) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def grow_clipped(lo, hi, amount, shape):
    return (
        tuple(max(a - m, 0) for a, m in zip(lo, amount)),
        tuple(min(b + m, s) for b, m, s in zip(hi, amount, shape)),
    )


def relative(inner_lo, inner_hi, outer_lo) -> tuple[slice, ...]:
    return tuple(slice(a - o, b - o) for a, b, o in zip(inner_lo, inner_hi, outer_lo))


class FragmentStep:
    """Picklable block function: daisy ships it to every worker process."""

    def __init__(self, plan_path: str):
        self.plan_path = plan_path
        self._plan = None
        self._input = None
        self._fragments = None

    def _open(self):
        if self._plan is None:
            self._plan = BlockwisePlan.load(self.plan_path)
            self._input = zarr.open_array(self._plan.input_path, mode="r")
            self._fragments = zarr.open_array(str(self._plan.fragments_path), mode="r+")
        return self._plan

    def __call__(self, block) -> None:
        plan = self._open()
        process_block(plan, self._input, self._fragments, plan.grid_position(block.write_roi))


def process_block(plan: BlockwisePlan, source, fragments, position) -> None:
    parameters = plan.parameters
    index = plan.block_index(position)
    core = plan.core(position)
    lo, hi = tuple(core.begin), tuple(core.end)
    shape = plan.shape

    kernel_lo, kernel_hi = grow_clipped(lo, hi, plan.context, shape)
    # smoothing reads a little further, so the kernel sees what a whole-volume run would
    reach = tuple(c + plan.smoothing_margin for c in plan.context)
    read_lo, read_hi = grow_clipped(lo, hi, reach, shape)

    read = (slice(None),) + box(
        [o + a for o, a in zip(plan.roi_offset, read_lo)],
        [o + b for o, b in zip(plan.roi_offset, read_hi)],
    )
    affinities = source[read]
    check_affinities(affinities, parameters)
    weights, nn_mean = edge_weights(
        affinities,
        parameters,
        random_state=zlib.crc32(f"{parameters.seed}:{index}".encode()),
        keep_nn_mean=parameters.threshold > 0,
    )
    del affinities

    in_kernel = (slice(None),) + relative(kernel_lo, kernel_hi, read_lo)
    kernel_started = time.perf_counter()
    raw = run_kernel(np.ascontiguousarray(weights[in_kernel]), parameters)
    kernel_seconds = time.perf_counter() - kernel_started
    del weights
    core_raw = raw[relative(lo, hi, kernel_lo)]
    local = finalize(core_raw)  # consecutive 1..n, no filters yet
    n_fragments = int(local.max())
    base = np.uint64(index) * np.uint64(plan.block_voxels)
    ids = np.where(local > 0, local.astype(np.uint64) + base, np.uint64(0))
    fragments[box(lo, hi)] = ids

    sizes = np.bincount(local.ravel(), minlength=n_fragments + 1)
    nn_sums = (
        np.bincount(local.ravel(), weights=nn_mean[relative(lo, hi, read_lo)].ravel(),
                    minlength=n_fragments + 1)
        if nn_mean is not None
        else np.zeros(0)
    )

    u, v = _overlap_matches(
        plan, fragments, raw, core_raw, local, base, position, kernel_lo, kernel_hi
    )

    record = plan.block_record(index)
    record.parent.mkdir(parents=True, exist_ok=True)
    partial = record.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(partial, u=u, v=v, sizes=sizes, nn_sums=nn_sums, kernel_seconds=kernel_seconds)
    os.replace(partial, record)  # atomic: a record on disk means the block is finished


#: A pair is stitched when it covers this fraction of each side's voxels in the halo.
AGREEMENT = 0.5


def _overlap_matches(plan, fragments, raw, core_raw, local, base, position, kernel_lo, kernel_hi):
    """Pairs (ours, theirs) that agree in our halo over each finished neighbour's core."""
    to_local = np.zeros(raw.size + 2, np.uint64)
    to_local[core_raw.ravel()] = local.ravel()
    to_local[0] = 0
    us, vs = [], []
    for other in plan.neighbours(position):
        if not plan.block_record(plan.block_index(other)).exists():
            continue
        theirs = plan.core(other)
        a = [max(b, e) for b, e in zip(theirs.begin, kernel_lo)]
        z = [min(b, e) for b, e in zip(theirs.end, kernel_hi)]
        if not all(x < y for x, y in zip(a, z)):
            continue
        ours = to_local[raw[relative(a, z, kernel_lo)]].ravel()
        ours = np.where(ours > 0, ours + base, 0)
        them = fragments[box(a, z)].ravel()
        both = (ours > 0) & (them > 0)
        pairs, counts = np.unique(np.stack([ours[both], them[both]]), axis=1, return_counts=True)
        if not len(counts):
            continue
        ours_ids, ours_sizes = np.unique(ours[ours > 0], return_counts=True)
        them_ids, them_sizes = np.unique(them[them > 0], return_counts=True)
        n_ours = ours_sizes[np.searchsorted(ours_ids, pairs[0])]
        n_them = them_sizes[np.searchsorted(them_ids, pairs[1])]
        keep = counts >= AGREEMENT * np.maximum(n_ours, n_them)
        us.append(pairs[0][keep])
        vs.append(pairs[1][keep])
    if not us:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    return np.concatenate(us), np.concatenate(vs)
