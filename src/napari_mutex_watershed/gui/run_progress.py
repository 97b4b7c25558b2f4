"""A full run's progress on screen: a bar in the Full run section (steps done, time left) and
napari's bar in the activity dock, both fed from one ``ProgressTally``."""

from __future__ import annotations

from qtpy.QtWidgets import QProgressBar

from ..blockwise.progress import ProgressTally


class RunProgress:
    """The section's bar (``bar``, hidden between runs) and the activity dock's."""

    def __init__(self) -> None:
        self.tally = ProgressTally()
        self.bar = QProgressBar()
        self.bar.setObjectName("full run progress")
        self.bar.setToolTip("Steps done of all (the blocks of even blocks, odd blocks and "
                            "relabel, and the stitch) and the time left at the pace so far.")
        self.bar.hide()
        self._dock_bar = None
        self._dock_text = ""

    def start(self) -> None:
        """A run starts: a new tally, the bar busy until the block count is known."""
        self.tally = ProgressTally()
        self.bar.setRange(0, 0)
        self.bar.setFormat("starting")
        self.bar.show()

    def show(self) -> None:
        """Show the tally in both bars."""
        value, total = self.tally.value()
        if self._dock_bar is None:
            # (created with the first progress line, not in the same event-loop turn as the
            # process start: each costs tens of ms)
            from napari.utils import progress

            self._dock_text = "Mutex watershed: starting"
            self._dock_bar = progress(total=0, desc=self._dock_text)
        if total > 0:
            if self._dock_bar.total != total:
                self._dock_bar.total = total
            if value != self._dock_bar.n:
                self._dock_bar.update(value - self._dock_bar.n)
            if self.bar.maximum() != total:
                self.bar.setRange(0, total)
            self.bar.setValue(value)
            left = self.tally.seconds_left()
            text = f"%v/%m steps{'' if left is None else ', ' + duration(left) + ' left'}"
            if self.bar.format() != text:
                self.bar.setFormat(text)
        description = f"Mutex watershed: {self.tally.describe()}"
        if self._dock_text != description:  # (napari's bar processes events on each)
            self._dock_text = description
            self._dock_bar.set_description(description)

    def stop(self) -> None:
        """The run ended: the section's bar hides (keeping its count), napari's closes."""
        self.bar.hide()
        if self._dock_bar is not None:
            try:
                self._dock_bar.close()
            except Exception:  # (the activity dock may be gone with the viewer)
                pass
            self._dock_bar = None


def duration(seconds: float) -> str:
    """'about 40 s', 'about 3 min', 'about 1 h 05 min'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"about {seconds} s"
    minutes = (seconds + 30) // 60
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60:02d} min"
