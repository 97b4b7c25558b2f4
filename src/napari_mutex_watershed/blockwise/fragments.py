"""Step 1 of a blockwise run: the even blocks, each segmented alone.

Blocks are coloured like a checkerboard. An even block is segmented with ``context`` voxels of
halo and cropped to its core; the odd blocks around it (step 2, ``seeded``) later take its
labels as seeds. Besides its fragments a block records which of them touch deep inside it
and how strongly the affinities between them repel: the stitch step keeps those apart unless
the joins between them are stronger. Fragment sizes leave out the bands the odd blocks label
again, so size and affinity filters count every voxel once.
"""

from __future__ import annotations

import os
import time
import zlib
from typing import NamedTuple

import numpy as np
import zarr

from ..engine import edge_slices, edge_weights, finalize, run_kernel
from ..errors import InvalidInputError, InvalidValuesError
from ..storage.blocks import open_block_source
from .bands import band_owner
from .disk import no_space, no_space_error, temporary_name
from .fatal import report_fatal
from .plan import BlockwisePlan
from .slots import slot

#: Voxels from every inner block face beyond which an even block's separations are trusted.
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


class BlockStep:
    """Picklable block function: daisy ships it to every worker process. Blocks of the other
    colour return at once (daisy's grid has no checkerboard); the others wait for a slot."""

    odd = False

    def __init__(self, plan_path: str):
        self.plan_path = plan_path
        self._state = None

    def _open(self):
        if self._state is None:
            plan = BlockwisePlan.load(self.plan_path)
            # any input format (zarr, OME-Zarr level, N5, HDF5), read like a numpy array
            self._state = (plan, open_block_source(plan.input_path),
                           zarr.open_array(str(plan.fragments_path), mode="r+"))
        return self._state

    def __call__(self, block) -> None:
        plan, source, fragments = self._open()
        position = plan.grid_position(block.write_roi)
        if plan.is_odd(position) == self.odd:
            with slot(plan.slots_dir, plan.num_workers):
                try:
                    self.process(plan, source, fragments, position)
                except InvalidInputError as error:  # the same every time: stop the run
                    report_fatal(plan.work_dir, f"{'odd' if self.odd else 'even'} step, "
                                 f"block {position}: {error}")
                    raise
                except OSError as error:
                    if no_space(error):
                        report_fatal(plan.work_dir, str(no_space_error(plan.work_dir)))
                    raise

    def process(self, plan, source, fragments, position) -> None:
        raise NotImplementedError


def read_region(source, region: tuple[slice, ...], path: str) -> np.ndarray:
    """``source[region]``; a chunk that cannot be read or decoded is named, since retrying
    it will not help."""
    try:
        return np.asarray(source[region])
    except Exception as error:
        chunk = broken_chunk(source, region)
        where = f"chunk {chunk}" if chunk is not None else "the voxels " + ", ".join(
            f"{r.start}:{r.stop}" for r in region[1:])
        raise InvalidInputError(
            f"cannot read {where} of {path}: {type(error).__name__}: {error}"
        ) from None


def broken_chunk(source, region) -> tuple[int, ...] | None:
    """Grid index of the first chunk in ``region`` that fails to read on its own."""
    chunks = getattr(source, "chunks", None)
    if chunks is None:
        return None
    region = tuple(slice(*r.indices(n)[:2]) for r, n in zip(region, source.shape))
    ranges = [range(r.start // c, -(-r.stop // c)) for r, c in zip(region, chunks)]
    for index in np.ndindex(*[len(r) for r in ranges]):
        grid = tuple(r[i] for r, i in zip(ranges, index))
        try:
            source[tuple(slice(g * c, (g + 1) * c) for g, c in zip(grid, chunks))]
        except Exception:
            return grid
    return None


class BlockInput(NamedTuple):
    """What a block reads: its core [lo, hi), the kernel box (core and halo) and the read box
    (the kernel box and the smoothing margin), with the weights of the kernel box and of the
    core and the nearest-neighbour mean of the read box (None unless the threshold needs
    it)."""

    index: int
    lo: tuple
    hi: tuple
    kernel_lo: tuple
    kernel_hi: tuple
    read_lo: tuple
    kernel_weights: np.ndarray
    core_weights: np.ndarray
    nn_mean: np.ndarray | None


def read_block(plan: BlockwisePlan, source, position, context) -> BlockInput:
    index = plan.block_index(position)
    core = plan.core(position)
    lo, hi = tuple(core.begin), tuple(core.end)
    kernel_lo, kernel_hi = grow_clipped(lo, hi, context, plan.shape)
    # smoothing reads a little further, so the kernel sees what a whole-volume run would
    reach = tuple(c + plan.smoothing_margin for c in context)
    read_lo, read_hi = grow_clipped(lo, hi, reach, plan.shape)
    read = (slice(None),) + box(
        [o + a for o, a in zip(plan.roi_offset, read_lo)],
        [o + b for o, b in zip(plan.roi_offset, read_hi)],
    )
    origin = tuple(int(o + a) for o, a in zip(plan.roi_offset, read_lo))
    try:
        weights, nn_mean = edge_weights(
            read_region(source, read, plan.input_path),
            plan.parameters,
            random_state=zlib.crc32(f"{plan.parameters.seed}:{index}".encode()),
            keep_nn_mean=plan.parameters.threshold > 0,
        )
    except InvalidValuesError as error:  # voxels in the input's own coordinates
        raise error.at(origin) from None
    in_kernel = (slice(None),) + relative(kernel_lo, kernel_hi, read_lo)
    in_core = (slice(None),) + relative(lo, hi, read_lo)
    # a view, not a copy: seeds lie in the halo, so edges that start in the core keep their
    # weights when an odd block seeds the kernel's weights
    return BlockInput(index, lo, hi, kernel_lo, kernel_hi, read_lo,
                      kernel_weights=np.ascontiguousarray(weights[in_kernel]),
                      core_weights=weights[in_core], nn_mean=nn_mean)


def save_record(plan: BlockwisePlan, index: int, **arrays) -> None:
    record = plan.block_record(index)
    record.parent.mkdir(parents=True, exist_ok=True)
    partial = temporary_name(record)
    np.savez_compressed(partial, **arrays)
    os.replace(partial, record)  # atomic: a record on disk means the block is finished


class EvenStep(BlockStep):
    def process(self, plan, source, fragments, position):
        process_even_block(plan, source, fragments, position)


def process_even_block(plan: BlockwisePlan, source, fragments, position) -> None:
    block = read_block(plan, source, position, plan.context)
    index, lo, hi = block.index, block.lo, block.hi
    kernel_lo, read_lo = block.kernel_lo, block.read_lo
    kernel_started = time.perf_counter()
    raw = run_kernel(block.kernel_weights, plan.parameters)
    kernel_seconds = time.perf_counter() - kernel_started
    block = block._replace(kernel_weights=None)
    local = finalize(raw[relative(lo, hi, kernel_lo)])  # consecutive 1..n, no filters yet
    del raw
    base = np.uint64(index) * np.uint64(plan.ids_per_block)
    fragments[box(lo, hi)] = np.where(local > 0, local.astype(np.uint64) + base, np.uint64(0))

    # voxels the odd blocks label again are counted there
    kept = band_owner(lo, hi, plan.block_size, plan.grid_shape, plan.band) < 0
    n_fragments = int(local.max())
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
    separated = separated_pairs(local, inner_faces, SEPARATION_MARGIN, wanted=seen)
    strength = separation_strength(local, block.core_weights, plan.parameters.offsets,
                                   inner_faces, SEPARATION_MARGIN, separated)
    save_record(plan, index, sizes=sizes, nn_sums=nn_sums, separated=separated,
                strength=strength, joins=np.zeros((2, 0), np.uint64),
                overlap=np.zeros(0, np.int64), kernel_seconds=kernel_seconds)


def trusted_region(shape, inner_faces, margin):
    """Slices of the part of a block at least ``margin`` voxels from every face it shares with
    another block, or None if there is none."""
    trusted = []
    for size, (below, above) in zip(shape, inner_faces):
        lo = margin if below else 0
        hi = size - margin if above else size
        if lo >= hi:
            return None
        trusted.append(slice(lo, hi))
    return tuple(trusted)


def separated_pairs(local: np.ndarray, inner_faces, margin: int, wanted=None) -> np.ndarray:
    """(2, n) local ids of fragment pairs that touch at least ``margin`` voxels from every face
    the block shares with another block (both ``wanted``, a flag per local id, if given).

    Near a face a block lacks what lies beyond its halo, and its separations there are as
    unreliable as its merges; deep inside it saw all around. ``inner_faces`` is, per axis,
    whether there is a block (below, above).
    """
    trusted = trusted_region(local.shape, inner_faces, margin)
    if trusted is None:
        return np.zeros((2, 0), np.uint32)
    steps = [tuple(int(d == axis) for d in range(local.ndim)) for axis in range(local.ndim)]
    return touching_pairs(local[trusted], steps, wanted)


def separation_strength(local, weights, offsets, inner_faces, margin, pairs) -> np.ndarray:
    """Per separated pair: minus the summed weight of every edge (any offset) between the two
    fragments in the trusted region; 0 where that sum attracts.

    A block may keep apart two fragments the affinities join, because of seeds or because it
    could not see the path around that the whole volume has; such a separation must not
    outweigh the joins that put the two together elsewhere.
    """
    trusted = trusted_region(local.shape, inner_faces, margin)
    if trusted is None or pairs.shape[1] == 0:
        return np.zeros(pairs.shape[1])
    labels = local[trusted]
    wanted = pair_keys(*pairs)
    order = np.argsort(wanted)
    in_pair = np.zeros(int(labels.max(initial=0)) + 1, bool)
    in_pair[pairs.ravel()] = True
    in_pair[0] = False
    total = np.zeros(len(wanted))
    for channel, offset in enumerate(offsets):
        source, target = edge_slices(offset, labels.shape)
        a, b, between = edges_among(labels[source], labels[target], in_pair)
        keys = pair_keys(a, b)
        # edges of the wanted pairs only: a lookup, not a sort of every edge
        at = order[np.minimum(np.searchsorted(wanted, keys, sorter=order), len(wanted) - 1)]
        hit = wanted[at] == keys
        total += np.bincount(at[hit], weights[channel][trusted][source][between][hit],
                             minlength=len(wanted))
    return np.maximum(-total, 0.0)


def edges_among(a: np.ndarray, b: np.ndarray, allowed: np.ndarray):
    """The ends (a, b) of the edges between two different labels that are both ``allowed``
    (a flag per label, False for 0), and the mask that picked them. Most edges lie inside one
    fragment, so the flags are looked up only for the few that cross."""
    candidate = a != b
    a, b = a[candidate], b[candidate]
    keep = allowed[a] & allowed[b]
    candidate[candidate] = keep
    return a[keep], b[keep], candidate


def pair_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One uint64 per unordered pair of 32-bit labels: (low << 32) | high."""
    a, b = a.astype(np.uint64), b.astype(np.uint64)
    return (np.minimum(a, b) << np.uint64(32)) | np.maximum(a, b)


def face_fragments(local: np.ndarray, inner_faces, context) -> np.ndarray:
    """Per local id: does the fragment reach within ``context`` of a face the block shares
    with another block? Only those can be joined, so the stitch step needs no pair of
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


def touching_pairs(local: np.ndarray, steps, wanted=None) -> np.ndarray:
    """(2, n) unique pairs (low, high) of different non-zero labels linked by one of ``steps``
    (both ``wanted``, a flag per label, if given)."""
    allowed = np.ones(int(local.max(initial=0)) + 1, bool) if wanted is None else wanted.copy()
    allowed[0] = False
    keys = [np.zeros(0, np.uint64)]
    for step in steps:
        source, target = edge_slices(step, local.shape)
        a, b, _ = edges_among(local[source], local[target], allowed)
        keys.append(pair_keys(a, b))
    keys = np.unique(np.concatenate(keys))
    return np.stack([keys >> np.uint64(32), keys & np.uint64(0xFFFFFFFF)]).astype(np.uint32)
