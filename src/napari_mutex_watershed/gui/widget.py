"""The napari dock widget: five collapsible sections (Input, Parameters, Preview, Full run,
Sweep) in a scroll area, so it fits a 1366x768 screen whatever is open.

Each section is a panel of its own; they talk by signals, wired here: the inputs panel sends
what its controls describe (``Inputs``) to the preview, full-run and sweep panels, and the
full-run and sweep panels send chosen parameters back. This module also remembers the
controls' values between sessions.
"""

from __future__ import annotations

import json
from typing import Any

from magicgui.widgets import Container
from pydantic import ValidationError
from qtpy.QtCore import QTimer

from ..parameters import WatershedParameters
from . import settings as settings_store
from .callback_time import recorded
from .full_run_panel import FullRunPanel
from .inputs_panel import InputsPanel
from .lifecycle import on_undocked, stop_with_widget
from .parameter_widgets import OFFSET_SOURCES
from .preview_panel import VIEW_OPTIONS, PreviewPanel
from .sections import Section, scroll_area
from .sweep_panel import SweepPanel

#: Full-run settings remembered between sessions.
RUN_SETTINGS = ("workers", "block_size")


class MutexWatershedWidget(Container):
    """Dock widget: affinities, parameters, live preview, full run, sweep."""

    def __init__(self, napari_viewer, *, preview_timeout: float | None = None) -> None:
        super().__init__(labels=False)
        self.viewer = napari_viewer
        self.inputs = InputsPanel(napari_viewer)
        self.preview_panel = PreviewPanel(napari_viewer, preview_timeout=preview_timeout)
        self.full_run = FullRunPanel(napari_viewer)
        self.sweep_panel = SweepPanel(napari_viewer, self.preview_panel.current_region)
        self.sections = {
            "Input": Section("Input", self.inputs.input_section.native),
            "Parameters": Section("Parameters", self.inputs.parameters_section.native),
            "Preview": Section("Preview", self.preview_panel.native),
            "Full run": Section("Full run: the whole volume, blockwise",
                                self.full_run.native, expanded=False),
            "Sweep": Section("Sweep", self.sweep_panel.native, expanded=False),
        }
        self.scroll = scroll_area(list(self.sections.values()))
        self.native.layout().setContentsMargins(0, 0, 0, 0)
        self.native.layout().addWidget(self.scroll)

        self._save_timer = QTimer(self.native)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(500)
        self._save_timer.timeout.connect(self.remember)

        self.restore()
        for panel in (self.preview_panel, self.full_run, self.sweep_panel):
            self.inputs.changed.connect(panel.set_inputs)
        self.inputs.changed.connect(self._remember_soon)
        self.preview_panel.problem.connect(self.inputs.show_message)
        self.preview_panel.problem_over.connect(self.inputs.clear_message)
        self.preview_panel.options_changed.connect(self._remember_soon)
        self.full_run.settings_changed.connect(self._remember_soon)
        self.full_run.parameters_chosen.connect(self.inputs.set_parameters)
        self.sweep_panel.apply_requested.connect(self.inputs.set_parameters)
        self.inputs.reset_choices()
        self.inputs._on_layer_chosen()  # the first Inputs, to every panel
        # kill the worker processes when the widget goes away, whoever closes it
        self._finalizer = stop_with_widget(self, self.preview_panel.service_box, _close_service)
        on_undocked(self.native, self._closed_by_napari)

    # ------------------------------------------------------------------ remembering
    def _remember_soon(self, *_args) -> None:
        self._save_timer.start()  # (one write for a burst of changes)

    @recorded("widget.remember")
    def remember(self) -> None:
        """Write the current values to the settings file (read at the next start)."""
        values: dict[str, Any] = {"offsets_source": self.inputs.offsets_source.value}
        values.update({key: getattr(self.preview_panel, key).value for key in VIEW_OPTIONS})
        values.update({key: getattr(self.full_run, key).value for key in RUN_SETTINGS})
        try:
            values["parameters"] = json.loads(self.inputs.parameters().to_json())
        except ValueError:
            return  # keep the last valid values
        settings_store.save_settings(values)

    def restore(self) -> None:
        """Read the values remembered from the last session, ignoring what is invalid."""
        values = settings_store.load_settings()
        if not values:
            return
        with self.inputs.loading():
            for panel, keys in ((self.preview_panel, VIEW_OPTIONS),
                                (self.full_run, RUN_SETTINGS)):
                for key in keys:
                    try:
                        if key in values:
                            getattr(panel, key).value = values[key]
                    except (ValueError, TypeError):
                        pass
            if values.get("offsets_source") in OFFSET_SOURCES:
                self.inputs.offsets_source.value = values["offsets_source"]
            try:
                parameters = WatershedParameters.model_validate(values.get("parameters", {}))
            except ValidationError:
                return
            self.inputs.show_values(parameters)

    # ------------------------------------------------------------------ teardown
    def close_preview(self) -> None:
        """Stop the preview, the sweep and their worker processes (also done when the widget
        is deleted)."""
        self.sweep_panel.close_sweep()
        self.preview_panel.close_preview()

    def _closed_by_napari(self) -> None:
        """Its dock closed: stop listening and every process (the preview's, the sweep's, a
        full run's), though the widget object may live on."""
        self._teardown()
        self.sweep_panel._teardown()
        self.close_preview()

    def _teardown(self) -> None:
        """The Qt side is gone: stop listening to the viewer and the layers."""
        self.inputs.stop_listening()
        self.preview_panel.stop_listening()
        self.full_run.shutdown()  # a running full-run job is stopped with its workers


def _close_service(box: list) -> None:
    service = box[0]
    if service is not None:
        service.close()
        box[0] = None
