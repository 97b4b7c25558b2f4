"""Step 1 of a blockwise run: the fragments of one block, and what its halo saw.

Each block is segmented with ``context`` voxels of halo and cropped to its core. Blocks are
independent, so they all run in parallel. Besides its core, a block keeps its labels in the
halo (only of segments that reach its core): step 2 compares them with the neighbours' cores.
It also keeps which of its fragments touch deep inside it (step 3 keeps those apart), and
which are linked by an edge of any offset although the kernel kept them apart (step 3 joins
no two of those through a contained pair), both only among fragments that reach a face.
"""

from __future__ import annotations

import os
import time
import zlib

import numpy as np
import zarr

from ..engine import edge_slices, edge_weights, finalize, run_kernel
from ..errors import InvalidInputError
from .plan import BlockwisePlan

#: Voxels from every inner block face beyond which a block's separations are trusted.
SEPARATION_MARGIN = 8


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
    try:
        weights, nn_mean = edge_weights(
            affinities,
            parameters,
            random_state=zlib.crc32(f"{parameters.seed}:{index}".encode()),
            keep_nn_mean=parameters.threshold > 0,
        )
    except InvalidInputError as error:
        where = tuple(int(o + a) for o, a in zip(plan.roi_offset, read_lo))
        raise InvalidInputError(
            f"{error} (voxel positions relative to the block's read region at {where})"
        ) from None
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

    inner_faces = plan.inner_faces(position)
    at_face = face_fragments(local, inner_faces, plan.context)
    separated = pairs_between(separated_pairs(local, inner_faces), at_face)
    adjacent = pairs_between(touching_pairs(local, parameters.offsets), at_face)

    to_local = np.zeros(raw.size + 2, np.uint32)
    to_local[core_raw.ravel()] = local.ravel()
    to_local[0] = 0
    halo = to_local[raw]  # halo-only segments become 0: they have nothing to stitch to
    halo[relative(lo, hi, kernel_lo)] = 0  # the core is in fragments.zarr; zeros pack small

    record = plan.block_record(index)
    record.parent.mkdir(parents=True, exist_ok=True)
    partial = record.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez_compressed(partial, halo=halo, sizes=sizes, nn_sums=nn_sums,
                        separated=separated, adjacent=adjacent,
                        kernel_seconds=kernel_seconds)
    os.replace(partial, record)  # atomic: a record on disk means the block is finished


def separated_pairs(local: np.ndarray, inner_faces) -> np.ndarray:
    """(2, n) local ids of fragment pairs that touch at least SEPARATION_MARGIN voxels from
    every face the block shares with another block.

    Near a face a block lacks what lies beyond its halo, and its separations there are as
    unreliable as its merges; deep inside it saw all around, so the stitch step treats these
    pairs as objects that must end in different segments. ``inner_faces`` is, per axis,
    whether there is a block (below, above).
    """
    trusted = []
    for size, (below, above) in zip(local.shape, inner_faces):
        lo = SEPARATION_MARGIN if below else 0
        hi = size - SEPARATION_MARGIN if above else size
        if lo >= hi:
            return np.zeros((2, 0), np.uint32)
        trusted.append(slice(lo, hi))
    steps = [tuple(int(d == axis) for d in range(local.ndim)) for axis in range(local.ndim)]
    return touching_pairs(local[tuple(trusted)], steps)


def face_fragments(local: np.ndarray, inner_faces, context) -> np.ndarray:
    """Per local id: does the fragment reach within ``context`` of a face the block shares
    with another block? Only those can be matched, so the stitch step needs no pair of
    fragments that are not both at a face (on data with many small fragments, most pairs)."""
    near_face = np.zeros(local.shape, bool)
    for axis, ((below, above), reach) in enumerate(zip(inner_faces, context)):
        band = [slice(None)] * local.ndim
        if below:
            band[axis] = slice(0, reach)
            near_face[tuple(band)] = True
        if above:
            band[axis] = slice(max(local.shape[axis] - reach, 0), None)
            near_face[tuple(band)] = True
    at_face = np.zeros(int(local.max()) + 1, bool)
    at_face[local[near_face]] = True
    at_face[0] = False
    return at_face


def pairs_between(pairs: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    return pairs[:, wanted[pairs[0]] & wanted[pairs[1]]]


def touching_pairs(local: np.ndarray, steps) -> np.ndarray:
    """(2, n) unique pairs (low, high) of different non-zero labels linked by one of ``steps``."""
    keys = [np.zeros(0, np.uint64)]
    for step in steps:
        source, target = edge_slices(step, local.shape)
        a, b = local[source], local[target]
        touching = (a != b) & (a > 0) & (b > 0)
        low = np.minimum(a[touching], b[touching]).astype(np.uint64)
        high = np.maximum(a[touching], b[touching]).astype(np.uint64)
        keys.append((low << np.uint64(32)) | high)
    keys = np.unique(np.concatenate(keys))
    return np.stack([keys >> np.uint64(32), keys & np.uint64(0xFFFFFFFF)]).astype(np.uint32)
