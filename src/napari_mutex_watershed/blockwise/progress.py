"""Progress of a blockwise run as JSON lines: both sides of the format, in one place.

The job (``--progress json``) prints one object per line on stdout,
``{"phase": "even", "done": 3, "total": 8, "elapsed": 1.2, "failed": 0, "skipped": 0}``,
with the phases ``even``, ``odd``, ``stitch``, ``relabel`` and ``done``. Whoever runs the job
(the napari widget, a script) reads them back with ``parse_progress`` and adds them up with
``ProgressTally``. No Qt, no napari.
"""

from __future__ import annotations

import json
import time

import numpy as np

#: Steps counted in blocks (the stitch is one call; ``done`` closes the run). The even and
#: odd steps count the blocks of their colour, relabel every block.
BLOCK_STEPS = ("even", "odd", "relabel")
STITCH = "stitch"
DONE = "done"
#: Records are counted again when a block finishes, but the job process spends at most
#: about one part in this many of its time listing them (10^5 records take tens of ms).
LISTING_SHARE = 100


class ProgressReporter:
    """daisy progress observer of the job: one JSON object per line, or nothing when the
    mode is not ``json`` (daisy's own bars show then)."""

    def __init__(self, mode: str, started: float):
        self.mode = mode
        self.started = started
        self._last: dict[str, tuple] = {}  # per phase: what it printed last
        #: daisy task id -> ``ColourProgress`` giving the phases it stands for
        self.split = {}

    def emit(self, phase: str, done: int, total: int, **extra) -> None:
        if self.mode != "json":
            return
        message = {"phase": phase, "done": done, "total": total,
                   "elapsed": round(time.time() - self.started, 3), **extra}
        key = (done, total, tuple(extra.items()))
        if key != self._last.get(phase):
            self._last[phase] = key
            print(json.dumps(message), flush=True)

    def _states(self, states, final: bool = False) -> None:
        if self.mode != "json":
            return
        for task_id, state in states.items():
            if task_id in self.split:
                for phase, done, total, extra in self.split[task_id](state, final):
                    self.emit(phase, done, total, **extra)
                continue
            self.emit(task_id, state.completed_count + state.skipped_count,
                      state.total_block_count, failed=state.failed_count,
                      skipped=state.skipped_count)

    on_start = on_progress = _states

    def on_finish(self, states) -> None:
        self._states(states, final=True)


def blocks_by_colour(plan, indices) -> dict[str, int]:
    """How many of the blocks ``indices`` (of ``plan``'s grid) are even and odd."""
    indices = np.fromiter(indices, np.int64)
    odd = int((np.sum(np.unravel_index(indices, plan.grid_shape), axis=0) % 2).sum())
    return {"even": len(indices) - odd, "odd": odd}


class ColourProgress:
    """The even and odd steps' progress, counted from the block records: daisy's even task
    runs over every block of the grid (those of the other colour return at once), and a
    local run computes both colours in one task (``claims``). ``colours`` is what one daisy
    task stands for: ``("even", "odd")`` for the local pool, whose blocks given up
    (``given_up``, a callable) are its failures, or one colour, whose task's failures are
    daisy's."""

    def __init__(self, plan, colours=("even", "odd"), given_up=None):
        self.plan = plan
        self.colours = colours
        self.given_up = given_up
        self.totals = blocks_by_colour(plan, range(plan.num_blocks))
        self.skipped = blocks_by_colour(plan, plan.recorded_blocks())
        self._finished = None  # daisy's count of finished blocks when last counted
        self._next_count = 0.0
        self._phases = []

    def __call__(self, state, final: bool = False) -> list:
        """``(phase, done, total, extra)`` per colour, counted again once daisy saw a block
        finish (``LISTING_SHARE``) and at the end."""
        finished = None if state is None else (state.completed_count, state.failed_count)
        now = time.monotonic()
        if final or (finished != self._finished and now >= self._next_count):
            self._finished = finished
            done = blocks_by_colour(self.plan, self.plan.recorded_blocks())
            self._next_count = now + LISTING_SHARE * (time.monotonic() - now)
            failed = (blocks_by_colour(self.plan, self.given_up()) if self.given_up is not None
                      else {colour: state.failed_count for colour in self.colours})
            self._phases = [(colour, done[colour], self.totals[colour],
                             {"failed": failed[colour], "skipped": self.skipped[colour]})
                            for colour in self.colours]
        return self._phases


def parse_progress(line: str) -> dict | None:
    """The progress object of one stdout line of the job, or None (any other line)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict) or "phase" not in message:
        return None
    return message


class ProgressTally:
    """All steps of a run (even blocks, odd blocks, stitch, relabel) as one count and one line.

    The tally keeps the latest line of every step instead of showing one line at a time, so
    it holds whatever order the lines come in.
    """

    def __init__(self):
        self.latest: dict[str, dict] = {}

    def add(self, message: dict) -> None:
        self.latest[message["phase"]] = message

    @property
    def blocks(self) -> int:
        """Blocks in the run: relabel's total, or the even and odd steps' together."""
        if "relabel" in self.latest:
            return int(self.latest["relabel"]["total"])
        return sum(int(self.latest[p]["total"]) for p in ("even", "odd") if p in self.latest)

    def value(self) -> tuple[int, int]:
        """(value, total), or (-1, -1) before the block count is known: every block counts
        once in its colour's step and once in relabel, and the stitch once."""
        if not self.blocks:
            return -1, -1
        total = 2 * self.blocks + 1
        if DONE in self.latest:
            return total, total
        done = sum(int(self.latest[p]["done"]) for p in BLOCK_STEPS if p in self.latest)
        stitched = int(bool(self.latest.get(STITCH, {}).get("done")))
        return min(done + stitched, total - 1), total

    def seconds_left(self) -> float | None:
        """Time left at the pace so far (the job's own clock), or None before any block is
        done (blocks skipped by a resume do not count as pace)."""
        value, total = self.value()
        skipped = sum(int(m.get("skipped") or 0) for m in self.latest.values()
                      if m["phase"] in BLOCK_STEPS)
        elapsed = max((float(m.get("elapsed") or 0) for m in self.latest.values()), default=0.0)
        worked = value - skipped
        if value < 0 or worked <= 0 or elapsed <= 0:
            return None
        return elapsed * (total - value) / worked

    def describe(self) -> str:
        if DONE in self.latest:
            return "done"
        if "relabel" not in self.latest and STITCH in self.latest:
            return "stitched" if self.latest[STITCH]["done"] else "stitching blocks"
        running = [p for p in BLOCK_STEPS if p in self.latest]
        if "relabel" in running:
            running = ["relabel"]
        return ", ".join(describe_step(self.latest[p]) for p in running) or "starting"


def describe_step(message: dict) -> str:
    """'even: 3/8 blocks (2 already done), 1 failed'."""
    text = f"{message['phase']}: {message['done']}/{message['total']} blocks"
    if message.get("skipped"):
        text += f" ({message['skipped']} already done)"
    if message.get("failed"):
        text += f", {message['failed']} failed"
    return text
