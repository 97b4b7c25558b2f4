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

#: Steps counted in blocks (the stitch is one call; ``done`` closes the run).
BLOCK_STEPS = ("even", "odd", "relabel")
STITCH = "stitch"
DONE = "done"


class ProgressReporter:
    """daisy progress observer of the job: one JSON object per line, or nothing when the
    mode is not ``json`` (daisy's own bars show then)."""

    def __init__(self, mode: str, started: float):
        self.mode = mode
        self.started = started
        self._last = None

    def emit(self, phase: str, done: int, total: int, **extra) -> None:
        if self.mode != "json":
            return
        message = {"phase": phase, "done": done, "total": total,
                   "elapsed": round(time.time() - self.started, 3), **extra}
        key = (phase, done, total, tuple(extra.items()))
        if key != self._last:
            self._last = key
            print(json.dumps(message), flush=True)

    def _states(self, states) -> None:
        for task_id, state in states.items():
            self.emit(task_id, state.completed_count + state.skipped_count,
                      state.total_block_count, failed=state.failed_count,
                      skipped=state.skipped_count)

    on_start = on_progress = on_finish = _states


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
        return next((int(m["total"]) for p, m in self.latest.items() if p != STITCH), 0)

    def value(self) -> tuple[int, int]:
        """(value, total), or (-1, -1) before the block count is known."""
        if not self.blocks:
            return -1, -1
        total = 3 * self.blocks + 1
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
