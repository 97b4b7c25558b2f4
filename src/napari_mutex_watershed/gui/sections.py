"""Collapsible sections in a scroll area, so the dock fits a 1366x768 screen whatever is open,
and texts that wrap with the whole text in their tooltip."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFrame,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

#: The Qt property of a wrapping label that holds its number of lines.
LINES = "mutex_watershed_lines"
#: No maximum height (Qt's QWIDGETSIZE_MAX).
WHOLE = 16777215


class Section(QWidget):
    """A title button that folds and unfolds the widget below it."""

    def __init__(self, title: str, body: QWidget, expanded: bool = True) -> None:
        super().__init__()
        self.setObjectName(f"section {title}")
        self.body = body
        self.toggle = QToolButton(text=title, checkable=True, checked=expanded)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setStyleSheet("QToolButton { border: none; font-weight: bold; }")
        self.toggle.toggled.connect(self.set_expanded)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 2)
        layout.setSpacing(0)
        layout.addWidget(self.toggle)
        layout.addWidget(body)
        self.set_expanded(expanded)

    @property
    def expanded(self) -> bool:
        return self.toggle.isChecked()

    def set_expanded(self, expanded: bool) -> None:
        if self.toggle.isChecked() != expanded:
            self.toggle.setChecked(expanded)  # (comes back here through toggled)
            return
        arrow = Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow
        self.toggle.setArrowType(arrow)
        self.body.setVisible(expanded)


def scroll_area(sections: list[QWidget]) -> QScrollArea:
    """The sections one below the other, scrolled vertically; no horizontal scroll bar (the
    contents take the dock's width) and no blank space between sections."""
    inner = QWidget()
    layout = QVBoxLayout(inner)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(2)
    for section in sections:
        layout.addWidget(section)
    layout.addStretch(1)  # extra height goes below the last section
    area = QScrollArea()
    area.setObjectName("mutex watershed sections")
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
    area.setWidget(inner)
    return area


def wrapping(label, lines: int) -> None:
    """Make a magicgui Label wrap its text, at most ``lines`` lines high (``show_text``
    puts the whole text in its tooltip), and hide it while it is empty: no blank space is
    kept for it. (Inside the scroll area a label growing or shrinking does not resize the
    dock, nor the canvas.)"""
    label.label = ""  # (magicgui turns label="" in the constructor into the name)
    native = label.native
    native.setWordWrap(True)
    native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    policy = QSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Maximum)
    policy.setHeightForWidth(True)
    native.setSizePolicy(policy)
    native.setProperty(LINES, lines)
    show_text(label, label.value)


def show_text(label, text: str, tooltip: str | None = None, whole: bool = False) -> None:
    """Put ``text`` in a label made by ``wrapping``: at most its lines (``whole``: as many
    as the text takes, for a refusal or failure to read in full), the whole text (or
    ``tooltip``) in its tooltip, hidden when empty."""
    label.value = text
    label.tooltip = tooltip if tooltip is not None else text
    native = label.native
    lines = native.property(LINES) or 1
    native.setMaximumHeight(WHOLE if whole else native.fontMetrics().lineSpacing() * lines + 4)
    # (magicgui's rows do not pass a wrapped label's height for its width on: asked here)
    needed = native.heightForWidth(native.width()) if whole and native.width() > 0 else 0
    native.setMinimumHeight(max(0, needed))
    if not text:
        label.visible = False  # (its row too: magicgui's label beside it)
    elif native.parent() is not None:  # (shown alone, it would be a window of its own)
        label.visible = True
