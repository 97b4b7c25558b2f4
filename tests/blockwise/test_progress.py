"""The progress format of a blockwise run: what the job prints and how it is read back."""

import json

from napari_mutex_watershed.blockwise.progress import (
    ProgressReporter,
    ProgressTally,
    parse_progress,
)


def test_what_the_job_prints_is_what_the_reader_counts(capsys):
    reporter = ProgressReporter("json", started=0.0)
    reporter.emit("even", 2, 4, failed=0, skipped=1)
    reporter.emit("even", 2, 4, failed=0, skipped=1)  # unchanged: not printed again
    reporter.emit("odd", 0, 4, failed=0, skipped=0)
    reporter.emit("even", 2, 4, failed=0, skipped=1)  # each step's last line is kept
    reporter.emit("stitch", 1, 1)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    messages = [parse_progress(line) for line in lines + ["daisy says hello", "{not json"]]
    assert messages[3:] == [None, None]
    tally = ProgressTally()
    for message in messages[:3]:
        tally.add(message)
    # 2 of 4 even blocks and the stitch, of 2 * 8 + 1: each of the 8 blocks in its colour's
    # step and in relabel
    assert tally.value() == (3, 17)
    assert tally.describe() == "stitched"
    ProgressReporter("bar", started=0.0).emit("even", 1, 4)  # daisy's bars show instead
    assert capsys.readouterr().out == ""


def test_seconds_left_at_the_pace_of_the_blocks_done_here():
    tally = ProgressTally()
    assert tally.seconds_left() is None
    tally.add({"phase": "even", "done": 4, "total": 8, "elapsed": 10.0, "skipped": 2})
    tally.add({"phase": "odd", "done": 0, "total": 8, "elapsed": 10.0})
    # 4 of 33 steps in 10 s, 2 of them reused by a resume: 2 done at 5 s each, 29 to go
    assert tally.seconds_left() == 10.0 * 29 / 2
    tally.add({"phase": "done", "done": 8, "total": 8, "elapsed": 30.0})
    assert tally.seconds_left() == 0.0


def test_progress_bar_counts_interleaved_steps_without_going_back():
    # lines of two steps may interleave in the job's output: the bar never goes back
    tally = ProgressTally()
    assert tally.value() == (-1, -1) and tally.describe() == "starting"
    values = []
    for phase, done, total in [("even", 3, 8), ("odd", 0, 8), ("even", 5, 8),
                               ("odd", 2, 8), ("even", 8, 8), ("odd", 8, 8),
                               ("stitch", 0, 1), ("stitch", 1, 1), ("relabel", 8, 16),
                               ("relabel", 16, 16)]:
        tally.add(json.loads(json.dumps({"phase": phase, "done": done, "total": total})))
        values.append(tally.value()[0])
        if (phase, done) == ("odd", 2):
            assert tally.describe() == "even: 5/8 blocks, odd: 2/8 blocks"
        if (phase, done) == ("stitch", 0):
            assert tally.describe() == "stitching blocks"
    assert values == sorted(values) and values[0] == 3
    assert tally.value() == (32, 33) and tally.describe() == "relabel: 16/16 blocks"
    tally.add({"phase": "done", "done": 16, "total": 16})
    assert tally.value() == (33, 33) and tally.describe() == "done"
