"""A mask and seeds in a blockwise run, as the whole-volume engine's ``segment`` takes them.

Voxels outside the mask stay 0; a seed id names one object, whose output id is the seed id,
and two seed ids never merge. A block reads both over its boxes and hands them to the
kernel; it records which of its fragments carry which seed id, and the stitch joins the
fragments of one seed id across blocks and keeps different seed ids apart (``stitch``).
Checked against the affinities' voxel grid before any worker starts (``open_guide``).
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError, MutexWatershedError
from ..storage.blocks import open_block_source
from .task import box, read_region

#: Ids the output array holds: ``plan_run`` creates it as uint32.
MAX_SEGMENTS = int(np.iinfo(np.uint32).max)


def check_ids_fit(n_segments: int, seed_max: int) -> None:
    """Refuse, in one line saying which, seed ids or segments the uint32 output cannot hold
    (unseeded segments are numbered above the largest seed id)."""
    if seed_max > MAX_SEGMENTS:
        raise MutexWatershedError(f"seed id {seed_max} does not fit the uint32 output: "
                                  f"seed ids go up to {MAX_SEGMENTS}")
    if seed_max + n_segments > MAX_SEGMENTS:
        raise MutexWatershedError(
            f"{n_segments} segments" + (f" above the largest seed id {seed_max}" if seed_max
                                         else "")
            + " do not fit the uint32 output; use larger min_size or a smaller region (--roi)"
        )


def open_guide(path, role: str, affinities) -> str:
    """The array at ``path`` (any format storage opens) as the plan names it, or one line
    on why it does not fit: spatial axes only, the affinities' shape, and their voxel size
    and offset when it stores any; integer ids for the seeds."""
    from ..storage import open_volume

    volume = open_volume(path, role, role=role)  # a bare container: its "mask" or "seeds"
    shape = tuple(int(s) for s in volume.data.shape)
    spatial = affinities.shape[1:]
    if volume.channel_dims or shape != spatial:
        raise InvalidInputError(
            f"the {role} {volume.path} has shape {shape} but the affinities {spatial}: it "
            "needs the affinities' spatial shape, without a channel axis")
    if volume.note is None and (tuple(volume.voxel_size) != tuple(affinities.voxel_size)
                                or tuple(volume.offset) != tuple(affinities.spatial_roi.offset)):
        raise InvalidInputError(
            f"the {role} {volume.path} has voxel size {tuple(volume.voxel_size)} and offset "
            f"{tuple(volume.offset)}, the affinities {tuple(affinities.voxel_size)} and "
            f"{tuple(affinities.spatial_roi.offset)}: they must share one voxel grid")
    dtype = np.dtype(volume.data.dtype)
    if role == "seeds" and not np.issubdtype(dtype, np.integer):
        raise InvalidInputError(f"the seeds {volume.path} have dtype {dtype}: seeds are "
                                "integer ids (0 = no seed)")
    if role == "mask" and not (dtype.kind == "b" or np.issubdtype(dtype, np.number)):
        raise InvalidInputError(f"the mask {volume.path} has dtype {dtype}: use bool or "
                                "numbers (0 = outside)")
    return str(volume.path.resolve())


class Guides:
    """The run's mask and seeds, opened once per worker; ``read`` gives them over a box of
    the region (None where the run has none)."""

    def __init__(self, plan):
        self.plan = plan
        self.mask = open_block_source(plan.mask_path) if plan.mask_path else None
        self.seeds = open_block_source(plan.seeds_path) if plan.seeds_path else None

    def read(self, lo, hi) -> tuple[np.ndarray | None, np.ndarray | None]:
        offset = self.plan.roi_offset
        region = box([o + a for o, a in zip(offset, lo)], [o + b for o, b in zip(offset, hi)])
        mask = seeds = None
        if self.mask is not None:
            mask = read_region(self.mask, region, self.plan.mask_path).astype(bool, copy=False)
        if self.seeds is not None:
            seeds = read_region(self.seeds, region, self.plan.seeds_path)
            if np.issubdtype(seeds.dtype, np.signedinteger) and seeds.size and seeds.min() < 0:
                first = tuple(int(o + p) for o, p in zip(
                    offset, np.argwhere(seeds < 0)[0] + np.asarray(lo)))
                raise InvalidInputError(f"the seeds hold a negative id, first at voxel {first}")
            seeds = seeds.astype(np.uint64, copy=False)
        return mask, seeds


def compact_seeded(raw: np.ndarray, seeds: np.ndarray | None):
    """Kernel labels as small ids (< raw.size + 1, as without seeds) and the seed id of each
    (0: unseeded). The kernel names a seeded segment by its seed id, which can be any
    number, and the others above the largest seed id."""
    if seeds is None:
        return raw, None
    if not seeds.any():  # most blocks of a run: no sort, only the kernel's shift undone
        raw[raw > 0] -= np.uint64(1)  # unseeded ids start above the largest seed id, 0
        return raw, np.zeros(int(raw.max(initial=0)) + 1, np.uint64)
    ids, compact = np.unique(raw, return_inverse=True)
    compact = compact.reshape(raw.shape).astype(np.uint64)
    if ids[0] != 0:  # no background: 0 stays free
        compact += np.uint64(1)
        ids = np.r_[np.uint64(0), ids]
    largest = seeds.max(initial=0)
    return compact, np.where(ids <= largest, ids, 0).astype(np.uint64)


def apply_guides(raw: np.ndarray, block):
    """A block's kernel labels with the mask applied (0 outside, as ``segment`` does) and
    compacted (``compact_seeded``); and the seed id of each compact label, or None."""
    if block.kernel_mask is not None:
        raw[~block.kernel_mask] = 0
    return compact_seeded(raw, block.kernel_seeds)


def seed_record(local: np.ndarray, compact: np.ndarray, seed_of, n_fragments: int,
                core_seeds: np.ndarray | None) -> dict:
    """What a block record keeps of the seeds: per fragment id 0..n of ``local`` (numbered
    from ``compact`` over the same voxels) its seed id or 0, and the largest seed id in the
    block's core (the stitch numbers unseeded segments above every seed id). Nothing
    without seeds."""
    if seed_of is None:
        return {}
    seeds = np.zeros(n_fragments + 1, np.uint64)
    seeds[local.ravel()] = seed_of[compact.ravel()]
    seeds[0] = 0
    return {"seeds": seeds, "seed_max": np.uint64(core_seeds.max(initial=0))}


def load_seeds(plan):
    """The seeded fragments of every block record: their fragment ids, their seed ids, and
    the largest seed id in the region (0 without seeds)."""
    fragments, seed_ids, largest = [np.zeros(0, np.uint64)], [np.zeros(0, np.uint64)], 0
    if plan.seeds_path is None:
        return fragments[0], seed_ids[0], largest
    for index in range(plan.num_blocks):
        with np.load(plan.block_record(index)) as record:
            seeds = record["seeds"]
            largest = max(largest, int(record["seed_max"]))
        local = np.flatnonzero(seeds)
        fragments.append(local.astype(np.uint64) + np.uint64(index) * np.uint64(
            plan.ids_per_block))
        seed_ids.append(seeds[local])
    return np.concatenate(fragments), np.concatenate(seed_ids), largest
