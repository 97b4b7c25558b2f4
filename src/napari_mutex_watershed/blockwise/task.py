"""The base of every block step: a picklable block function that owns what all steps do
around their own work.

Each step of a run (even blocks, odd blocks, relabel, the pyramid's levels) is a small class
on ``BlockTask``: it names itself, says which blocks it writes and how far it reads, opens
its arrays once per worker and processes one block. The base builds its daisy task (local
or cluster workers, retries, resume markers), reads a block with its halo, and turns an
input error or a full disk into a stop of the whole run (``fatal``) instead of retries.
"""

from __future__ import annotations

import os
import sys
import time
import zlib
from typing import NamedTuple

import daisy
import numpy as np
from funlib.geometry import Roi

from ..engine import edge_weights
from ..errors import InvalidInputError, InvalidValuesError
from ..freed_memory import IdleTrim
from ..storage.chunk_files import chunk_grids
from ..storage.paths import check_still_there
from .cluster import ClusterWorkerLauncher
from .disk import no_space, no_space_error, temporary_name
from .fatal import report_fatal
from .plan import BlockwisePlan
from .zygote import ForkedWorker, zygote_address

#: A worker idle this long after a block gives the memory it freed back to the system: it
#: keeps it for its next block, but not while it waits (docs/blockwise.md, *Memory*).
IDLE_TRIM_SECONDS = 0.1

_idle_trim = IdleTrim(IDLE_TRIM_SECONDS)


def box(lo, hi) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def grow_clipped(lo, hi, amount, shape):
    return (
        tuple(max(a - m, 0) for a, m in zip(lo, amount)),
        tuple(min(b + m, s) for b, m, s in zip(hi, amount, shape)),
    )


def relative(inner_lo, inner_hi, outer_lo) -> tuple[slice, ...]:
    return tuple(slice(a - o, b - o) for a, b, o in zip(inner_lo, inner_hi, outer_lo))


class BlockTask:
    """One step of a run over blocks. Subclasses set ``name`` and implement ``open`` and
    ``process``; daisy ships the instance to every worker (so it holds only the plan's path
    until ``open``)."""

    #: daisy's task id, the worker's step argument and the folder of its resume markers.
    name = ""

    def __init__(self, plan_path: str):
        self.plan_path = str(plan_path)
        self._plan: BlockwisePlan | None = None
        self._opened = False

    def __getstate__(self):  # only the path travels; each worker opens its own arrays
        return {"plan_path": self.plan_path, **self._arguments()}

    def __setstate__(self, state):
        self.__init__(**state)

    def _arguments(self) -> dict:
        """Constructor arguments besides the plan's path (for pickling)."""
        return {}

    @property
    def plan(self) -> BlockwisePlan:
        if self._plan is None:
            self._plan = BlockwisePlan.load(self.plan_path)
        return self._plan

    # ------------------------------------------------------------------ what a step says
    def write_size(self) -> tuple[int, ...]:
        """Voxels (of level 0) one block writes."""
        return self.plan.block_size

    def reach(self) -> tuple[int, ...] | None:
        """Voxels around its block that it reads from the step before it, when piped after
        it (a block then waits for the blocks of that step it touches)."""
        return None

    def open(self) -> None:
        """Open the arrays the step reads and writes, once per worker."""

    def process(self, block) -> None:
        raise NotImplementedError

    def where(self, block) -> str:
        """The block, as a message names it."""
        return f"block at voxel {tuple(block.write_roi.offset)}"

    def describe(self, block) -> str:
        """The step and the block, as the line that stops a run names them."""
        return f"{self.name} step, {self.where(block)}"

    def writes_to(self):
        """Where the step writes, as a full disk is named."""
        return self.plan.work_dir

    # ------------------------------------------------------------------ what the base does
    def __call__(self, block) -> None:
        if not self._opened:
            self.open()
            self._opened = True
        try:
            self.process(block)
        except InvalidInputError as error:  # the same every time: stop the run
            message = f"{self.describe(block)}: {error}"
            print(f"input error, the run stops: {message}", file=sys.stderr, flush=True)
            report_fatal(self.plan.work_dir, message)
            raise
        except OSError as error:
            if no_space(error):
                report_fatal(self.plan.work_dir, str(no_space_error(self.writes_to())))
            raise

    def daisy_task(self) -> daisy.Task:
        """The step as one daisy task. Blocks of a step never depend on each other (no
        conflict waves); cluster workers run ``worker.py`` through the plan's template."""
        plan = self.plan
        write_roi = Roi((0,) * plan.ndim, self.write_size())
        total_roi, read_roi = plan.total_roi(), write_roi
        reach = self.reach()
        if reach is not None:
            total_roi, read_roi = total_roi.grow(reach, reach), read_roi.grow(reach, reach)
        zygote = zygote_address()
        if plan.worker_command:
            function = ClusterWorkerLauncher(plan.worker_command, self.plan_path, self.name)
        elif zygote is not None:
            function = ForkedWorker(self, zygote)
        else:
            from .worker import LocalWorker  # which imports every step

            function = LocalWorker(self)
        return daisy.Task(
            self.name,
            total_roi=total_roi,
            read_roi=read_roi,
            write_roi=write_roi,
            process_function=function,
            read_write_conflict=False,
            fit="shrink",
            max_workers=plan.num_workers,
            max_retries=plan.max_retries,
            # let every block use its retries even when several blocks fail
            max_worker_restarts=plan.num_blocks * (plan.max_retries + 1),
            timeout=plan.timeout,
            tracking_path=str(plan.tracking_dir / self.name),
        )


class GridTask(BlockTask):
    """A step over the block grid, in checkerboard colours: blocks of the other colour return
    at once (daisy's grid has no checkerboard)."""

    #: True: odd blocks only, False: even blocks only, None: every block.
    odd: bool | None = None

    def process(self, block) -> None:
        position = self.plan.grid_position(block.write_roi)
        if self.odd is not None and self.plan.is_odd(position) != self.odd:
            return
        self.compute(position)

    def compute(self, position) -> None:
        """Compute the block at ``position``, timed from its start."""
        with _idle_trim.call():
            self._block_started = time.time()
            self.process_block(position)

    def process_block(self, position) -> None:
        raise NotImplementedError

    def where(self, block) -> str:
        return f"block {self.plan.grid_position(block.write_roi)}"

    def read_with_halo(self, source, position, context, guides=None) -> BlockInput:
        """Read a block and ``context`` voxels around it (clipped to the region) and make its
        weights; the smoothing margin is read too, so the kernel sees what a whole-volume run
        would. ``guides`` (``mask_seeds.Guides``) add the run's mask and seeds. Value errors
        name the voxel in the input's own coordinates."""
        plan = self.plan
        index = plan.block_index(position)
        core = plan.core(position)
        lo, hi = tuple(core.begin), tuple(core.end)
        kernel_lo, kernel_hi = grow_clipped(lo, hi, context, plan.shape)
        reach = tuple(c + plan.smoothing_margin for c in context)
        read_lo, read_hi = grow_clipped(lo, hi, reach, plan.shape)
        read = (slice(None),) + box(
            [o + a for o, a in zip(plan.roi_offset, read_lo)],
            [o + b for o, b in zip(plan.roi_offset, read_hi)],
        )
        origin = tuple(int(o + a) for o, a in zip(plan.roi_offset, read_lo))
        mask, seeds = guides.read(read_lo, read_hi) if guides is not None else (None, None)
        in_kernel = relative(kernel_lo, kernel_hi, read_lo)
        try:
            weights, nn_mean = edge_weights(
                read_region(source, read, plan.input_path),
                plan.parameters,
                mask=mask,
                random_state=zlib.crc32(f"{plan.parameters.seed}:{index}".encode()),
                keep_nn_mean=plan.parameters.threshold > 0,
            )
        except InvalidValuesError as error:
            raise error.at(origin) from None
        in_core = (slice(None),) + relative(lo, hi, read_lo)
        kernel_weights = np.ascontiguousarray(weights[(slice(None),) + in_kernel])
        # a view, not a copy: seeds lie in the halo, so edges that start in the core keep
        # their weights when an odd block seeds the kernel's weights
        return BlockInput(index, lo, hi, kernel_lo, kernel_hi, read_lo,
                          kernel_weights=kernel_weights,
                          core_weights=weights[in_core], nn_mean=nn_mean,
                          kernel_mask=None if mask is None else mask[in_kernel],
                          kernel_seeds=None if seeds is None else seeds[in_kernel])

    def save_record(self, index: int, **arrays) -> None:
        """The block's statistics, joins and bands; on disk means the block is finished.
        Its start and seconds (unix time) let the benchmark tell
        time in blocks from idle workers."""
        started = getattr(self, "_block_started", None)
        if started is not None:
            arrays.update(block_started=started, block_seconds=time.time() - started)
        record = self.plan.block_record(index)
        record.parent.mkdir(parents=True, exist_ok=True)
        partial = temporary_name(record)
        np.savez_compressed(partial, **arrays)
        os.replace(partial, record)  # atomic


class BlockInput(NamedTuple):
    """What a block reads: its core [lo, hi), the kernel box (core and halo) and the read box
    (the kernel box and the smoothing margin), with the weights of the kernel box and of the
    core and the nearest-neighbour mean of the read box (None unless the threshold needs
    it); the run's mask and seeds over the kernel box, None without them."""

    index: int
    lo: tuple
    hi: tuple
    kernel_lo: tuple
    kernel_hi: tuple
    read_lo: tuple
    kernel_weights: np.ndarray
    core_weights: np.ndarray
    nn_mean: np.ndarray | None
    kernel_mask: np.ndarray | None = None
    kernel_seeds: np.ndarray | None = None


def read_region(source, region: tuple[slice, ...], path: str) -> np.ndarray:
    """``source[region]``; a chunk that cannot be read or decoded is named, since retrying
    it will not help, and so is an array deleted meanwhile (checked after the read, one
    stat: its chunks would have read as fill values)."""
    try:
        values = np.asarray(source[region])
        check_still_there(path)
        return values
    except InvalidInputError:  # says what is wrong already (an input deleted meanwhile)
        raise
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
    region = [r.indices(n)[:2] for r, n in zip(region, source.shape)]
    for grid in chunk_grids(region, chunks):
        try:
            source[tuple(slice(g * c, (g + 1) * c) for g, c in zip(grid, chunks))]
        except Exception:
            return grid
    return None
