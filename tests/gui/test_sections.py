"""The dock widget's layout in a real napari (xvfb-run): sections in a scroll area that fit a
1366x768 screen, each reachable, folded and unfolded by its title."""

from __future__ import annotations

import pytest
from qtpy.QtWidgets import QScrollArea

pytestmark = pytest.mark.gui

SMALL_SCREEN = (1366, 768)


def test_every_section_fits_a_small_screen_and_can_be_reached(viewer_with_widget, qtbot):
    viewer, widget = viewer_with_widget
    viewer.window._qt_window.resize(*SMALL_SCREEN)
    sections = widget.sections
    assert list(sections) == ["Input", "Parameters", "Preview", "Full run", "Sweep"]
    for section in sections.values():
        section.set_expanded(True)
    qtbot.wait(50)
    assert isinstance(widget.scroll, QScrollArea)
    # all open, the contents are taller than the screen, the widget is not: it scrolls
    assert widget.scroll.widget().sizeHint().height() > SMALL_SCREEN[1]
    assert widget.native.minimumSizeHint().height() < 700
    assert widget.native.sizeHint().height() < SMALL_SCREEN[1]
    dock = widget.native.parentWidget()
    while dock is not None and dock.metaObject().className() != "QtViewerDockWidget":
        dock = dock.parentWidget()
    assert dock is not None and dock.minimumSizeHint().height() < 700
    # the last controls of each section can be scrolled to and seen
    for control in (widget.inputs.seeds, widget.inputs.reset_button,
                    widget.preview_panel.status, widget.full_run.use_result,
                    widget.sweep_panel.apply_button):
        widget.scroll.ensureWidgetVisible(control.native)
        qtbot.wait(10)
        assert not control.native.visibleRegion().isEmpty(), control.name


def test_a_section_folds_and_rarely_used_parameters_start_folded(viewer_with_widget, qtbot):
    _viewer, widget = viewer_with_widget
    assert not widget.inputs.more.expanded  # sigma, strides, channels, ... folded
    assert not widget.inputs.fields["sigma"].native.isVisible()
    assert widget.inputs.fields["bias_short"].native.isVisible()
    parameters = widget.sections["Parameters"]
    before = widget.scroll.widget().sizeHint().height()
    parameters.toggle.click()  # fold by its title
    assert not parameters.expanded and not parameters.body.isVisible()
    qtbot.wait(50)
    assert widget.scroll.widget().sizeHint().height() < before  # no space kept for it
    parameters.toggle.click()
    assert parameters.body.isVisible()


def test_an_empty_message_keeps_no_space_and_a_long_one_is_whole_in_its_tooltip(
    viewer_with_widget, qtbot
):
    _viewer, widget = viewer_with_widget
    message, status = widget.inputs.message, widget.full_run.run_status
    assert message.value == "" and message.native.isHidden()
    assert status.value == "" and status.native.isHidden()
    widget.inputs.fields["channels"].value = ", ".join(["9"] * 40)  # a long message
    assert not message.native.isHidden() and message.tooltip == message.value
    lines = message.native.fontMetrics().lineSpacing()
    assert message.native.maximumHeight() <= 3 * lines + 4  # cut at 3 lines, whole on hover
    widget.inputs.fields["channels"].value = ""
    assert message.native.isHidden()
