"""The full run's progress, read from the job's JSON lines: pure logic, no display needed."""

from napari_mutex_watershed.gui import run_job


def test_progress_bar_counts_interleaved_steps_without_going_back():
    # lines of two steps may interleave in the job's output: the bar never goes back
    tally = run_job.ProgressTally()
    assert tally.value() == (-1, -1) and tally.describe() == "starting"
    values = []
    for phase, done, total in [("even", 3, 8), ("odd", 0, 8), ("even", 5, 8),
                               ("odd", 2, 8), ("even", 8, 8), ("odd", 8, 8),
                               ("stitch", 0, 1), ("stitch", 1, 1), ("relabel", 4, 8),
                               ("relabel", 8, 8)]:
        tally.add({"phase": phase, "done": done, "total": total})
        values.append(tally.value()[0])
        if (phase, done) == ("odd", 2):
            assert tally.describe() == "even: 5/8 blocks, odd: 2/8 blocks"
        if (phase, done) == ("stitch", 0):
            assert tally.describe() == "stitching blocks"
    assert values == sorted(values) and values[0] == 3
    assert tally.value() == (24, 25) and tally.describe() == "relabel: 8/8 blocks"
    tally.add({"phase": "done", "done": 8, "total": 8})
    assert tally.value() == (25, 25) and tally.describe() == "done"
