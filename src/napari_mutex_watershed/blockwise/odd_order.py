"""Which ready odd block a local worker takes next (``claims``).

An odd block's kernel time follows the repulsive edges in its box, each a mutex constraint
to keep: it is expected to take its voxels times the share of repulsive edges that the even
blocks across its faces counted where their boxes and its own overlap (its *work*; the even
blocks record the counts, ``repulsive_toward_odd``, as its own data is not read before it
runs). For most of a run the odd block of most work goes first. Near the end, with
``BALANCE_PER_WORKER`` blocks or fewer left per worker, the blocks are too few and too long
for that alone: two workers would often end a block apart, one computing the last block
alone. There each ready block is tried first, the rest given, most work first, to whichever
worker is free first, and the one whose plan ends soonest is taken. Seconds come from the
even blocks recorded (their mean time for the mean work of the ready odd blocks) and the
blocks under way end at their claim's time plus their expected seconds (docs/blockwise.md,
*Speed and memory*).
"""

from __future__ import annotations

import math

import numpy as np

from .plan import BlockwisePlan
from .task import grow_clipped

#: An even block's record: per face (axis, below / above) with an odd block across it, the
#: repulsive edges and the edges it sampled where its box and that block's overlap.
REPULSIVE_TOWARD_ODD = "repulsive_toward_odd"
#: ``repulsive_toward_odd`` samples every this many voxels along each axis.
SAMPLE_STEP = 2
#: Blocks left per worker at which the order turns from most work first to the soonest end.
BALANCE_PER_WORKER = 8


def odd_kernel_box(plan: BlockwisePlan, position) -> tuple[tuple, tuple]:
    """The voxels an odd block's kernel sees: its core and ``odd_context``, clipped."""
    core = plan.core(tuple(position))
    return grow_clipped(tuple(core.begin), tuple(core.end), plan.odd_context, plan.shape)


def repulsive_toward_odd(plan: BlockwisePlan, position, weights, kernel_lo) -> np.ndarray:
    """An even block's repulsive edges (weight below 0) and edges, per face with an odd
    block across it, where its kernel box (``weights``, from ``kernel_lo``) and that block's
    overlap, every ``SAMPLE_STEP`` voxels: a few ms, from weights the block holds anyway."""
    counts = np.zeros((plan.ndim, 2, 2), np.int64)
    kernel_hi = tuple(a + n for a, n in zip(kernel_lo, weights.shape[1:]))
    for axis, step, neighbour in plan.face_neighbours(position):
        lo, hi = odd_kernel_box(plan, neighbour)
        lo = tuple(max(a, b) for a, b in zip(lo, kernel_lo))
        hi = tuple(min(a, b) for a, b in zip(hi, kernel_hi))
        sampled = (slice(None),) + tuple(slice(a - o, b - o, SAMPLE_STEP)
                                         for a, b, o in zip(lo, hi, kernel_lo))
        part = weights[sampled]
        counts[axis, face_side(step)] = (np.count_nonzero(part < 0), part.size)
    return counts


def face_side(step: int) -> int:
    """The index of a face in ``repulsive_toward_odd``: 0 below, 1 above."""
    return (step + 1) // 2


def soonest_end(candidates, rest, seconds, free_at) -> object:
    """The candidate to take now so that the last worker ends soonest: each tried first,
    on the worker free at ``free_at[0]``, the rest given, longest first, to whichever worker
    is free first (``free_at``: when each worker is free; ``seconds``: a block's expected
    seconds). Ties keep the candidates' order."""
    rest_longest_first = sorted(rest, key=seconds, reverse=True)
    best, best_end = None, math.inf
    for candidate in candidates:
        free = [free_at[0] + seconds(candidate), *free_at[1:]]
        for position in rest_longest_first:
            if position != candidate:
                free[free.index(min(free))] += seconds(position)
        if max(free) < best_end - 1e-9:
            best, best_end = candidate, max(free)
    return best


class OddOrder:
    """The expected work of the odd blocks and the order a worker tries the ready ones in,
    from the records of the even blocks they read."""

    def __init__(self, plan: BlockwisePlan):
        self.plan = plan
        self._toward: dict[int, np.ndarray] = {}  # even block: repulsive_toward_odd
        self._even_seconds = 0.0  # the even blocks read: their seconds summed
        self._even_timed = 0  # ... and how many of them had any
        self._work: dict[tuple, float] = {}  # odd block: expected_work

    def expected_work(self, position) -> float:
        """Its voxels times the repulsive share its even neighbours counted toward it;
        asked only once they are recorded, so kept (a look asks every ``POLL`` while a
        worker waits)."""
        if position not in self._work:
            counts = np.zeros(2, np.int64)  # repulsive edges, edges
            for axis, step, neighbour in self.plan.face_neighbours(position):
                counts += self._toward_odd(neighbour)[axis, face_side(-step)]  # its face to us
            share = counts[0] / counts[1] if counts[1] else 1.0  # records of an older run
            lo, hi = odd_kernel_box(self.plan, position)
            self._work[position] = float(share) * math.prod(b - a for a, b in zip(lo, hi))
        return self._work[position]

    def _toward_odd(self, position) -> np.ndarray:
        index = self.plan.block_index(position)
        if index not in self._toward:  # a record never changes
            with np.load(self.plan.block_record(index)) as record:
                files = record.files
                self._toward[index] = (record[REPULSIVE_TOWARD_ODD]
                                       if REPULSIVE_TOWARD_ODD in files
                                       else np.zeros((self.plan.ndim, 2, 2), np.int64))
                if "block_seconds" in files:
                    self._even_seconds += float(record["block_seconds"])
                    self._even_timed += 1
        return self._toward[index]

    def near_end(self, blocks_left: int) -> bool:
        return blocks_left <= BALANCE_PER_WORKER * self.plan.num_workers

    def order(self, ready: list, waiting: list, started: dict | None = None,
              now: float = 0.0) -> list:
        """The ready odd blocks in the order to try them: most work first, and near the end
        the one whose plan ends soonest before them. ``waiting``: odd blocks not ready yet;
        ``started`` (near the end): the blocks under way, of either colour, and when their
        claims were taken."""
        ranked = sorted(ready, key=self.expected_work, reverse=True)
        candidates = [p for p in ranked if p not in (started or {})]
        if started is None or len(candidates) < 2:
            return ranked
        mean_work = float(np.mean([self.expected_work(p) for p in ranked]))
        if not self._even_timed or mean_work == 0:  # an older run, or no repulsive edge near
            return ranked
        # an odd block takes the even blocks' mean time for the ready odd blocks' mean work
        mean_even = self._even_seconds / self._even_timed
        per_work = mean_even / mean_work

        def seconds(position) -> float:
            if position in ready:
                return self.expected_work(position) * per_work
            return mean_even  # under way and even, or not ready yet: the mean

        others = sorted(max(now, start + seconds(p)) for p, start in started.items())
        free_at = [now] + (others + [now] * self.plan.num_workers)[:self.plan.num_workers - 1]
        rest = [p for p in ready + waiting if p not in started]
        first = soonest_end(candidates, rest, seconds, free_at)
        return [first] + [p for p in ranked if p != first]
