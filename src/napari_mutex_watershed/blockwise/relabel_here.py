"""The relabel and the pyramid of a small local region, in the job process, in threads.

Up to ``job.IN_PROCESS_VOXELS`` a worker's start costs more than these steps' work, so the
job process does them itself, with ``num_workers`` threads: numpy's array operations and
zarr's codecs release the GIL, so the threads share the cores the block workers used.
Level 0 stays in memory (at most 64 MB of uint32), so each level of the pyramid is made from
the level above without reading it back. Each step, once done, leaves a mark in the plan's
tracking folder: a killed run resumes after the last step it finished.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..storage.chunk_files import open_chunk_files
from ..storage.levels import labels_levels
from .plan import BlockwisePlan
from .pyramid import STEP as PYRAMID
from .pyramid import downsample_mode, window
from .relabel import RelabelBlocks
from .task import box


def relabel_and_pyramid_here(plan: BlockwisePlan, plan_path: str, reporter) -> None:
    """Relabel every block, then write every level of the pyramid, skipping steps done."""
    total = plan.num_blocks
    with ThreadPoolExecutor(threads(plan)) as pool:
        if plan.done_here(RelabelBlocks.name):
            reporter.emit(RelabelBlocks.name, total, total, failed=0, skipped=total)
            level0 = None
        else:
            level0 = _relabel(plan, plan_path, pool, reporter)
            plan.mark_done_here(RelabelBlocks.name)
        pyramid_here(plan, level0, pool, reporter)


def threads(plan: BlockwisePlan) -> int:
    return max(plan.num_workers, 1)


def _relabel(plan: BlockwisePlan, plan_path: str, pool, reporter) -> np.ndarray:
    """Write level 0 block by block (each block its own chunks) and return it."""
    step = RelabelBlocks(plan_path)
    step.open()
    level0 = np.zeros(plan.shape, step.output.dtype)

    def relabel(position) -> None:
        core = plan.core(position)
        where = box(tuple(core.begin), tuple(core.end))
        level0[where] = step.final_ids(position)
        step.output[where] = level0[where]

    positions = list(np.ndindex(*plan.grid_shape))
    reporter.emit(step.name, 0, len(positions), failed=0, skipped=0)
    for done, _ in enumerate(pool.map(relabel, positions), start=1):
        reporter.emit(step.name, done, len(positions), failed=0, skipped=0)
    return level0


def pyramid_here(plan: BlockwisePlan, level0: np.ndarray | None, pool, reporter) -> None:
    """Every level below level 0 from the one above (in memory, or read if a resume skipped
    it), the level cut in slabs along its first axis, one thread each."""
    levels = labels_levels(Path(plan.output_path).parent)
    above = level0
    for number in range(1, len(levels)):
        name = f"{PYRAMID}-{number}"
        path, factor = levels[number]
        if plan.done_here(name):
            reporter.emit(name, 1, 1, failed=0, skipped=1)
            above = None
            continue
        if above is None:
            above = open_chunk_files(levels[number - 1][0])[...]
        step = window(factor, levels[number - 1][1])
        target = open_chunk_files(path, "r+")
        above = downsample_in_slabs(above, step, target.shape, pool, threads(plan))
        target[...] = above
        plan.mark_done_here(name)
        reporter.emit(name, 1, 1, failed=0, skipped=0)


def downsample_in_slabs(data: np.ndarray, step, shape, pool, parts: int) -> np.ndarray:
    """``downsample_mode(data, step)``, slab by slab: windows never cross a slab, and only
    the last slab reaches the far edge, where ``downsample_mode`` pads."""
    rows = shape[0]
    parts = min(parts, rows)
    bounds = [rows * i // parts for i in range(parts + 1)]
    out = np.empty(shape, data.dtype)

    def slab(i) -> None:
        lo, hi = bounds[i], bounds[i + 1]
        out[lo:hi] = downsample_mode(data[lo * step[0]:hi * step[0]], step)

    list(pool.map(slab, range(parts)))
    return out
