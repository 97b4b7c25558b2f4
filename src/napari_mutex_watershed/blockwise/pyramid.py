"""Step 5 of a blockwise run: the lower resolutions of the OME-Zarr labels, blockwise.

Level k is made from level k - 1, one chunk of level k per block, so memory stays at about
a block however large the volume. One daisy task per level, each piped after the one before
(a block of level k waits for the blocks of level k - 1 it reads), each tracked, so a killed
run resumes where it stopped. Downsampling takes the most frequent label of each window
(ties: the first voxel of the window), which keeps ids and thin objects better than
averaging or striding.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import zarr

from ..storage.levels import labels_levels
from .plan import BlockwisePlan
from .task import BlockTask

STEP = "pyramid"


def downsample_mode(data: np.ndarray, step: tuple[int, ...]) -> np.ndarray:
    """The most frequent value of each ``step`` window; partial windows at the far edge are
    padded with their edge values.

    Counts come from comparing whole arrays, one per voxel of the window, pair by pair: 4 to
    7 times faster than counting along a (windows, voxels) array. Each is copied out of its
    strided view first and every result written in place, which made the comparisons 2.6
    times faster again (docs/blockwise.md, *Speed*)."""
    if all(s == 1 for s in step):
        return data
    pad = [(0, -n % s) for n, s in zip(data.shape, step)]
    if any(p for _, p in pad):
        data = np.pad(data, pad, mode="edge")
    out_shape = tuple(n // s for n, s in zip(data.shape, step))
    # the voxels of every window, in window order
    voxels = [data[tuple(slice(o, None, s) for o, s in zip(offset, step))].copy()
              for offset in np.ndindex(*step)]
    counts = [np.ones(out_shape, np.uint8) for _ in voxels]
    same = np.empty(out_shape, bool)
    for j, k in itertools.combinations(range(len(voxels)), 2):
        np.equal(voxels[j], voxels[k], out=same)
        counts[j] += same
        counts[k] += same
    best, best_count = voxels[0], counts[0]  # copies: free to overwrite
    for voxel, count in zip(voxels[1:], counts[1:]):  # only a strictly larger count wins a tie
        np.greater(count, best_count, out=same)
        np.copyto(best, voxel, where=same)
        np.maximum(best_count, count, out=best_count)
    return best


def window(factor, above) -> tuple[int, ...]:
    """The voxels of the level above that one voxel of a level covers, per axis, from their
    factors relative to level 0."""
    return tuple(f // a for f, a in zip(factor, above))


class PyramidLevel(BlockTask):
    """One level: a block reads the level above and writes one chunk of this level."""

    def __init__(self, plan_path: str, level: int):
        super().__init__(plan_path)
        self.level = int(level)
        self.name = f"{STEP}-{self.level}"

    def _arguments(self) -> dict:
        return {"level": self.level}

    def write_size(self) -> tuple[int, ...]:
        """One chunk of this level (chunks are the block size), in level-0 voxels, so no two
        workers share a chunk."""
        factor = labels_levels(self.writes_to())[self.level][1]
        return tuple(b * f for b, f in zip(self.plan.block_size, factor))

    def writes_to(self) -> Path:
        return Path(self.plan.output_path).parent

    def open(self) -> None:
        levels = labels_levels(self.writes_to())
        (source, above), (target, factor) = levels[self.level - 1], levels[self.level]
        self.source = zarr.open_array(str(source), mode="r")
        self.target = zarr.open_array(str(target), mode="r+")
        self.factor, self.step = factor, window(factor, above)

    def process(self, block) -> None:
        source, target, factor, step = self.source, self.target, self.factor, self.step
        lo = tuple(int(b) // f for b, f in zip(block.write_roi.begin, factor))
        hi = tuple(min(-(-int(e) // f), n)
                   for e, f, n in zip(block.write_roi.end, factor, target.shape))
        read = tuple(slice(a * s, min(b * s, n))
                     for a, b, s, n in zip(lo, hi, step, source.shape))
        target[tuple(slice(a, b) for a, b in zip(lo, hi))] = downsample_mode(source[read], step)


def pyramid_levels(plan_path: str) -> list[PyramidLevel]:
    """One step per level below level 0, each piped after the one before."""
    plan = BlockwisePlan.load(plan_path)
    return [PyramidLevel(plan_path, level)
            for level in range(1, len(labels_levels(Path(plan.output_path).parent)))]
