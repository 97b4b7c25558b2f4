"""The Full run section's progress bar (xvfb-run): steps done of all, and the time left."""

from __future__ import annotations

import pytest

from napari_mutex_watershed.gui.run_progress import RunProgress, duration

pytestmark = pytest.mark.gui


def test_the_bar_counts_every_step_and_says_the_time_left(qtbot, make_napari_viewer):
    make_napari_viewer()  # (napari's activity-dock bar needs a viewer)
    progress = RunProgress()
    qtbot.addWidget(progress.bar)
    progress.start()
    assert not progress.bar.isHidden() and progress.bar.maximum() == 0  # busy
    for message in ({"phase": "even", "done": 4, "total": 8, "elapsed": 2.0},
                    {"phase": "odd", "done": 2, "total": 8, "elapsed": 3.0}):
        progress.tally.add(message)
        progress.show()
    bar = progress.bar
    # 16 blocks, each in its colour's step and in relabel, and the stitch
    assert (bar.value(), bar.maximum()) == (6, 33)
    # 6 steps in 3 s: 27 to go at that pace
    assert bar.format() == f"%v/%m steps, {duration(3.0 * 27 / 6)} left" == (
        "%v/%m steps, about 14 s left")
    progress.stop()
    assert bar.isHidden() and bar.value() == 6  # (kept until the next run starts)


def test_durations_read_like_a_person_would_say_them():
    assert [duration(s) for s in (0.4, 42, 89, 3599, 3600 + 5 * 60)] == [
        "about 0 s", "about 42 s", "about 1 min", "about 1 h 00 min", "about 1 h 05 min"]
