"""Local runs: one pool of ``--workers`` workers computes the blocks of both colours.

daisy gives each task its own workers. Piping the odd step after the even step, as cluster
runs do, starts twice ``--workers`` processes, each importing for about 0.3 s of CPU, on one
machine beside the running blocks, and leaves workers waiting for one another (a worker
that waits gives its memory back and faults it in again for its next block). Locally the
blocks of both colours are one daisy task instead (``POOLED_STEP``): every block daisy hands
out is a *ticket*, and the worker holding it computes the next block that is ready and not
taken: the even blocks first, in grid order (every odd block waits for some of them), then
the odd blocks whose even blocks are recorded, the longest expected first (among the next
``LOOK_AHEAD`` in grid order) and near the end the one that lets the workers end together
(``odd_order``), so that the run does not end with one worker computing a long block alone
(docs/blockwise.md, *Speed*).

A block is done when its record is on disk, whichever ticket computed it, so the result does
not depend on the order. A *claim* is a file lock held while the block computes; the
operating system releases it when the process dies, even by SIGKILL, and another ticket takes
the block again. A ticket waits while blocks it cannot take are under way and returns once
none is left, so every ticket left computes a block; each attempt (a resume) hands out a
ticket for every block again, and those of blocks already done return at once. A block
that failed ``max_retries + 1`` times in an attempt is given up, with the odd blocks that
read it, and the run ends naming them.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager

import numpy as np

from ..errors import BlockwiseError, InvalidInputError
from .odd_order import OddOrder, odd_kernel_box
from .plan import BlockwisePlan, block_indices_in
from .task import GridTask

try:
    import fcntl
except ImportError:  # not POSIX: each step its own workers, piped
    fcntl = None

#: The daisy task of a local run's blocks, and the folder of its resume markers and logs.
POOLED_STEP = "blocks"
#: ``BlockClaims.claim`` yields this while every block left to take is under way.
WAIT = "wait"
#: Seconds between two looks for a block to take.
POLL = 0.02
#: Ready odd blocks, in grid order, among which the longest expected is taken first.
LOOK_AHEAD = 64


def pooled(plan: BlockwisePlan) -> bool:
    """Do both colours run as one task of local workers? Cluster workers keep daisy's
    order, the odd step piped after the even step: locks on a shared file system are not
    to be relied on."""
    return plan.claims_dir is not None and fcntl is not None


class BlockClaims:
    """The blocks of one plan: which are done, given up or ready, and their claims. A look
    stats only the blocks it passes (runs may have 10^5 blocks)."""

    def __init__(self, plan: BlockwisePlan):
        self.plan = plan
        self.directory = plan.claims_dir
        self.failures_dir = plan.claims_dir / "failed"
        positions = list(np.ndindex(*plan.grid_shape))
        self.index = {p: plan.block_index(p) for p in positions}
        #: the even blocks first (sorted keeps grid order within each colour)
        self.order = sorted(positions, key=plan.is_odd)
        self._first = 0  # every block before it in ``order`` is done or given up
        self._done: set[int] = set()  # a record, once written, stays for the run
        self._reads: dict[tuple, list[int]] = {}
        self.odd_order = OddOrder(plan)
        self.pending = False  # did the last look see blocks that will become ready?

    def reads(self, position) -> list[int]:
        """The even blocks an odd block reads, and waits for, by index."""
        if not self.plan.is_odd(position):
            return []
        if position not in self._reads:
            self._reads[position] = [
                self.plan.block_index(p)
                for p in self.plan.even_positions_in(*odd_kernel_box(self.plan, position))]
        return self._reads[position]

    def _finished(self, index: int) -> bool:
        return self.is_done(index) or self.is_given_up(index)

    def is_done(self, index: int) -> bool:
        if index not in self._done and self.plan.block_record(index).exists():
            self._done.add(index)
        return index in self._done

    def is_given_up(self, index: int) -> bool:
        """Has the block failed more than ``max_retries`` times?"""
        try:
            return os.path.getsize(self.failures_dir / str(index)) > self.plan.max_retries
        except FileNotFoundError:
            return False

    def _look(self):
        """The blocks to take, in order (lazily); ``self.pending`` tells, once they are
        all seen, whether any other block left may become ready."""
        self.pending = False
        while self._first < len(self.order) and self._finished(self.index[self.order[self._first]]):
            self._first += 1
        odd, waiting, even = [], [], []  # ready odd blocks, odd blocks not ready, even blocks
        seen_all = True
        for position in self.order[self._first:]:
            if self._finished(self.index[position]):
                continue
            reads = self.reads(position)
            if not all(self.is_done(r) for r in reads):
                # never ready if one of them was given up (a look only on this rare path)
                self.pending |= not any(self.is_given_up(r) for r in reads)
                waiting.append(position)
            elif not self.plan.is_odd(position):
                yield position
                even.append(position)  # back here: it was under way
            elif len(odd) < LOOK_AHEAD + self.plan.num_workers:  # some may be under way
                odd.append(position)
            else:
                self.pending = True  # beyond the look-ahead: taken later
                seen_all = False
                break
        near_end = seen_all and self.odd_order.near_end(len(odd) + len(waiting) + len(even))
        started = self._started(odd + even) if odd and near_end else None
        yield from self.odd_order.order(odd, waiting, started, time.time())

    def _started(self, positions) -> dict:
        """The blocks under way among ``positions``, each with the time its claim was taken
        (its lock file's, ``claim``). A look takes a free lock and lets it go at once: a
        worker that tries it meanwhile waits one ``POLL``."""
        started = {}
        for position in positions:
            path = self.directory / f"{self.index[position]}.lock"
            try:
                handle = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # never claimed
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                started[position] = os.fstat(handle).st_mtime
            finally:
                os.close(handle)
        return started

    @contextmanager
    def claim(self):
        """Hold the claim of the next block and yield its position; ``WAIT`` while every
        block left to take is under way, None once none is left. A block that raises counts
        one failure, an input error all its tries."""
        self.directory.mkdir(parents=True, exist_ok=True)
        under_way = False
        for position in self._look():
            index = self.index[position]
            handle = os.open(self.directory / f"{index}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # under way in another worker
                os.close(handle)
                under_way = True
                continue
            try:
                # finished, or given up by the worker that just let it go, since the look
                if self.plan.block_record(index).exists() or self.is_given_up(index):
                    continue
                os.utime(handle)  # when it was taken (``_started``)
                try:
                    yield position
                except Exception as error:
                    # an input error is the same every time (and stops the run): given up
                    # at once, before the lock goes, so no other worker meets it again
                    tries = self.plan.max_retries + 1 if isinstance(error, InvalidInputError) else 1
                    self.failures_dir.mkdir(parents=True, exist_ok=True)
                    with open(self.failures_dir / str(index), "ab") as failures:
                        failures.write(b"x" * tries)
                    raise
                return
            finally:
                os.close(handle)  # closing releases the lock
        yield WAIT if under_way or self.pending else None

    def new_attempt(self) -> None:
        """A run (or a resume) hands out a ticket for every block again and gives the
        blocks an earlier attempt gave up their tries back: the records, not daisy's
        markers, say what is done, and spare tickets return at once."""
        shutil.rmtree(self.failures_dir, ignore_errors=True)
        shutil.rmtree(self.plan.tracking_dir / POOLED_STEP, ignore_errors=True)

    def given_up(self) -> set[int]:
        return {index for index in block_indices_in(self.failures_dir) if self.is_given_up(index)}

    def check_complete(self, last_error: str | None) -> None:
        """Raise, naming the blocks given up, unless every block is recorded."""
        done = self.plan.recorded_blocks()
        missing = [p for p in self.order if self.index[p] not in done]
        if not missing:
            return
        given_up = self.given_up()
        failed = [p for p in missing if self.index[p] in given_up]
        step = "odd" if failed and all(self.plan.is_odd(p) for p in failed) else "even"
        offsets = [tuple(self.plan.core(p).begin) for p in failed[:5]]
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        raise BlockwiseError(
            f"{step}: {len(failed)} block(s) failed, at voxel offsets {offsets}{more}, after "
            f"{self.plan.max_retries + 1} tries ({len(missing) - len(failed)} more could not "
            f"run): {last_error or 'no message'}"
        )


class LocalBlocks(GridTask):
    """Both colours as one task: each block daisy hands out is a ticket for the block
    ``BlockClaims`` gives, computed by the even or the odd step."""

    name = POOLED_STEP

    def open(self) -> None:
        from .even_blocks import EvenBlocks
        from .odd_blocks import OddBlocks

        self.claims = BlockClaims(self.plan)
        self.steps = {}
        for step in (EvenBlocks(self.plan_path), OddBlocks(self.plan_path)):
            step.open()
            self.steps[step.odd] = step
        self.claimed = None

    def process(self, block) -> None:
        self.claimed = None
        while True:
            with self.claims.claim() as position:
                if position is not WAIT:
                    if position is not None:
                        self.claimed = position
                        self.steps[self.plan.is_odd(position)].compute(position)
                    return
            time.sleep(POLL)

    def describe(self, block) -> str:
        """The block computed and its step, not the ticket daisy handed out."""
        if getattr(self, "claimed", None) is None:
            return super().describe(block)
        return f"{self.steps[self.plan.is_odd(self.claimed)].name} step, block {self.claimed}"
