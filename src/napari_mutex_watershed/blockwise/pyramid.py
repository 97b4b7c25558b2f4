"""Step 5 of a blockwise run: the lower resolutions of the OME-Zarr labels, blockwise.

Level k is made from level k - 1, one chunk of level k per block, so memory stays at about
a block however large the volume. One daisy task per level, each piped after the one before
(a block of level k waits for the blocks of level k - 1 it reads), each tracked, so a killed
run resumes where it stopped. Downsampling takes the most frequent label of each window
(ties: the first voxel of the window), which keeps ids and thin objects better than
averaging or striding.
"""

from __future__ import annotations

from pathlib import Path

import daisy
import numpy as np
import zarr
from funlib.geometry import Roi

from ..storage.levels import labels_levels
from .plan import BlockwisePlan

STEP = "pyramid"


def downsample_mode(data: np.ndarray, step: tuple[int, ...]) -> np.ndarray:
    """The most frequent value of each ``step`` window; partial windows at the far edge are
    padded with their edge values."""
    if all(s == 1 for s in step):
        return data
    pad = [(0, -n % s) for n, s in zip(data.shape, step)]
    if any(p for _, p in pad):
        data = np.pad(data, pad, mode="edge")
    out_shape = tuple(n // s for n, s in zip(data.shape, step))
    split = data.reshape(tuple(v for n, s in zip(out_shape, step) for v in (n, s)))
    ndim = len(step)
    windows = split.transpose(tuple(range(0, 2 * ndim, 2)) + tuple(range(1, 2 * ndim, 2)))
    windows = windows.reshape(-1, int(np.prod(step)))
    counts = np.zeros(windows.shape, np.uint8)
    for j in range(windows.shape[1]):
        counts[:, j] = (windows == windows[:, j:j + 1]).sum(axis=1)
    best = counts.argmax(axis=1)
    return windows[np.arange(len(windows)), best].reshape(out_shape)


class PyramidStep:
    """Picklable block function for one level: reads the level above, writes its chunks."""

    def __init__(self, plan_path: str, level: int):
        self.plan_path = plan_path
        self.level = int(level)
        self._state = None

    def _open(self):
        if self._state is None:
            plan = BlockwisePlan.load(self.plan_path)
            levels = labels_levels(Path(plan.output_path).parent)
            (source, above), (target, factor) = levels[self.level - 1], levels[self.level]
            self._state = (zarr.open_array(str(source), mode="r"),
                           zarr.open_array(str(target), mode="r+"), above, factor)
        return self._state

    def __call__(self, block) -> None:
        source, target, above, factor = self._open()
        lo = tuple(int(b) // f for b, f in zip(block.write_roi.begin, factor))
        hi = tuple(min(-(-int(e) // f), n)
                   for e, f, n in zip(block.write_roi.end, factor, target.shape))
        step = tuple(f // a for f, a in zip(factor, above))
        read = tuple(slice(a * s, min(b * s, n))
                     for a, b, s, n in zip(lo, hi, step, source.shape))
        target[tuple(slice(a, b) for a, b in zip(lo, hi))] = downsample_mode(source[read], step)


def pyramid_tasks(plan: BlockwisePlan, plan_path: str, launcher=None) -> list:
    """One daisy task per level below level 0, in level-0 voxels: a block of level k covers
    one chunk of level k (chunks are the block size), so no two workers share a chunk."""
    levels = labels_levels(Path(plan.output_path).parent)
    tasks = []
    for level, (_, factor) in enumerate(levels[1:], start=1):
        size = tuple(b * f for b, f in zip(plan.block_size, factor))
        name = f"{STEP}-{level}"
        function = (launcher(plan.worker_command, plan_path, name) if plan.worker_command
                    else PyramidStep(plan_path, level))
        tasks.append(daisy.Task(
            name,
            total_roi=plan.total_roi(),
            read_roi=Roi((0,) * plan.ndim, size),
            write_roi=Roi((0,) * plan.ndim, size),
            process_function=function,
            read_write_conflict=False,
            fit="shrink",
            max_workers=plan.num_workers,
            max_retries=plan.max_retries,
            timeout=plan.timeout,
            tracking_path=str(plan.tracking_dir / name),
        ))
    return tasks


def step_function(plan_path: str, step: str):
    """The block function a cluster worker runs for ``pyramid-<level>``."""
    return PyramidStep(plan_path, int(step.rsplit("-", 1)[1]))
