"""The Sweep section: run a grid of parameters on the preview region, look at every result
side by side, score them against a (sparse) ground truth and apply the best.

``SweepPanel(viewer, region_of)`` is a magicgui Container: it sweeps around the latest
``Inputs`` of the inputs panel (``set_inputs``), on the crop ``region_of(layer)`` gives (the
preview's: the same crop the live preview segments), and sends a chosen row's parameters on
``apply_requested``. The computation is
``sweep.Sweeper`` (worker processes, up to the worker count, started on the first sweep and
kept warm); the panel polls it from a QTimer and only touches layers on the main thread.
"""

from __future__ import annotations

import os
import time

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)
from psygnal import Signal
from qtpy.QtCore import QTimer

from ..errors import MutexWatershedError
from ..sweep import (
    DEFAULT_BIASES,
    Sweeper,
    SweepInputs,
    best,
    parameter_grid,
    parse_values,
    write_csv,
)
from ..sweep.table import check_csv_target
from .callback_time import excluded, recorded
from .inputs_panel import Inputs
from .layers import (
    PREVIEW_KEY,
    SWEEP_KEY,
    add_labels_without_blocking,
    is_transient,
    level0,
)
from .lifecycle import disconnect_all, stop_with_widget
from .sections import show_text, wrapping
from .sweep_table import SweepTable
from .visible_region import NotVisible, placement, world_map

LAYER_PREFIX = "sweep "
#: Status texts that say why a sweep cannot start: recomputed when the inputs change.
CANNOT_SWEEP = "Cannot sweep: "
def _grid(viewer):
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


class SweepPanel(Container):
    """Sweep bias (and threshold, min size) on the preview region; score, rank, apply."""

    apply_requested = Signal(object)  # WatershedParameters of the applied row

    def __init__(self, viewer, region_of, *, workers: int | None = None) -> None:
        super().__init__(labels=True, name="sweep")
        self.label = ""
        self.viewer = viewer
        self.region_of = region_of
        self.inputs = Inputs()
        self.job = None
        self.results = []  # SweepResult of the current/last sweep, in arrival order
        self.best_result = None
        self._sweeper: Sweeper | None = None
        self._sweeper_box: list = [None]
        self._meta: dict = {}
        self._closed = False
        self._job_number = 0
        self._to_remove: list = []
        self._revealed = None  # the hidden layer shown, to be removed at the next step
        self._arrived: list = []  # results received, not shown yet
        self._arriving = None  # the LabelsArrival of the result being added
        self._active = False

        cpus = os.cpu_count() or 1
        self.bias_values = LineEdit(
            name="sweep_bias", label="Bias values",
            value=", ".join(f"{b:g}" for b in DEFAULT_BIASES),
            tooltip="Uniform biases to try (the bias of every offset), e.g. "
            "'0.1, 0.25, 0.5' or a range 'start:stop:step' such as '0.3:0.7:0.1' (stop "
            "included). Empty: keep the bias set above.",
        )
        self.threshold_values = LineEdit(
            name="sweep_threshold", label="Threshold values", value="",
            tooltip="Thresholds to try, as for the bias. Empty: keep the threshold above.",
        )
        self.min_size_values = LineEdit(
            name="sweep_min_size", label="Min size values", value="",
            tooltip="Minimum sizes to try, e.g. '0, 20, 50' or '0:100:25'. Empty: keep the "
            "minimum size above.",
        )
        for widget, text in ((self.bias_values, "e.g. 0.1, 0.5 or 0.3:0.7:0.1"),
                             (self.threshold_values, "empty: keep; e.g. 0, 0.2, 0.4"),
                             (self.min_size_values, "empty: keep; e.g. 0, 20, 50")):
            widget.native.setPlaceholderText(text)
        self.ground_truth = ComboBox(
            name="ground_truth", label="Ground truth", choices=self._labels_choices,
            nullable=True, value=None,
            tooltip="Labels layer to score against; it may be sparse: only voxels > 0 "
            "count (0 = unlabelled). Without it the results are shown but not scored.",
        )
        self.workers = SpinBox(
            name="workers", label="Workers", value=workers or min(2, cpus), min=1,
            max=max(cpus, workers or 1),
            tooltip="Settings computed in parallel, each in its own process.",
        )
        self.run_button = PushButton(name="run_sweep", text="Run sweep")
        self.run_button.tooltip = (
            "Segment the preview region (what the live preview segments for the current "
            "view) once per setting, in the background; each result becomes a Labels layer "
            "named by its setting.")
        self.cancel_button = PushButton(name="cancel_sweep", text="Cancel", enabled=False)
        self.grid_view = CheckBox(
            name="grid_view", text="Grid view", label="", value=bool(_grid(self.viewer).enabled),
            tooltip="napari's grid mode: every visible layer in its own view, side by side.",
        )
        self.status = Label(name="sweep_status", value="")
        wrapping(self.status, 2)

        self.table = SweepTable()

        self.apply_button = PushButton(name="apply_sweep", text="Apply", enabled=False)
        self.apply_button.tooltip = ("Copy the parameters of the selected row (none selected: "
                                     "the best, highlighted) into the controls above. "
                                     "Double-click a row to apply it.")
        self.save_button = PushButton(name="save_sweep", text="Save CSV...", enabled=False)
        self.clear_button = PushButton(name="clear_sweep", text="Remove layers")
        self.clear_button.tooltip = "Remove the sweep's Labels layers from the viewer."

        run_row = Container(widgets=[self.run_button, self.cancel_button, self.grid_view],
                            layout="horizontal", labels=False, name="sweep_run_row")
        result_row = Container(widgets=[self.apply_button, self.save_button, self.clear_button],
                               layout="horizontal", labels=False, name="sweep_result_row")
        for row in (run_row, result_row):
            row.label = ""
            row.margins = (0, 0, 0, 0)
        self.extend([self.bias_values, self.threshold_values,
                     self.min_size_values, self.ground_truth, self.workers, run_row,
                     self.status, result_row])
        # the table spans the whole width, between the status and the buttons below it
        self.native.layout().insertWidget(self.index(self.status) + 1, self.table)

        self._timer = QTimer(self.native)
        self._timer.setInterval(50)
        self._timer.timeout.connect(self._poll)
        # layers are removed one per turn of the event loop, and shown again first: under
        # Xvfb/Mesa, napari 0.9 segfaults drawing after several Labels layers were removed
        # in one go, or after a hidden Labels layer was removed
        self._removal_timer = QTimer(self.native)
        self._removal_timer.setInterval(30)
        self._removal_timer.timeout.connect(self._remove_next)

        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.apply_button.changed.connect(self.apply)
        self.save_button.changed.connect(self._save_dialog)
        self.clear_button.changed.connect(self.remove_layers)
        self.grid_view.changed.connect(self._on_grid_toggled)
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.table.itemDoubleClicked.connect(lambda *_: self.apply())

        grid = _grid(self.viewer)
        self._connections = [
            (grid.events.enabled, self._on_grid_changed),
            (self.viewer.layers.events.inserted, self._on_layers_changed),
            (self.viewer.layers.events.removed, self._on_layers_changed),
        ]
        for emitter, callback in self._connections:
            emitter.connect(callback)
        self.reset_choices()
        self._choose_ground_truth()

        self._finalizer = stop_with_widget(self, self._sweeper_box, _close_sweeper)

    # ------------------------------------------------------------------ choices
    def _labels_choices(self, _widget=None):
        from napari.layers import Labels

        return [
            (layer.name, layer)
            for layer in self.viewer.layers
            if isinstance(layer, Labels) and not is_transient(layer)
        ]

    def _choose_ground_truth(self) -> None:
        """Preselect a layer that says it is the ground truth (the sample data's is)."""
        for name, layer in self._labels_choices():
            lowered = name.lower()
            if "ground truth" in lowered or "ground_truth" in lowered or lowered == "gt":
                self.ground_truth.value = layer
                return

    @recorded("sweep.layers_changed")
    def _on_layers_changed(self, _event=None) -> None:
        if not self._closed:
            self.reset_choices()

    def _say(self, text: str) -> None:
        show_text(self.status, text)

    @recorded("sweep.inputs")
    def set_inputs(self, inputs: Inputs) -> None:
        """The inputs changed: a refusal that is no longer true (or now says something
        else) is recomputed."""
        self.inputs = inputs
        if not self.running and self.status.value.startswith(CANNOT_SWEEP):
            refusal = inputs.problem if inputs.parameters is None else ""
            self._say(CANNOT_SWEEP + refusal if refusal else "")

    # ------------------------------------------------------------------ running
    def sweeper(self) -> Sweeper:
        if self._sweeper is not None and self._sweeper.workers != self.workers.value:
            self._sweeper.close()
            self._sweeper = None
        if self._sweeper is None:
            self._sweeper = Sweeper(workers=self.workers.value, nice=True)
            self._sweeper_box[0] = self._sweeper
        return self._sweeper

    @property
    def running(self) -> bool:
        """True from Run until every result is shown (or the sweep was cancelled)."""
        return self._active

    def settings(self, parameters):
        """The grid the value fields describe around ``parameters``; raises ValueError."""
        return parameter_grid(
            parameters,
            bias=parse_values(self.bias_values.value),
            threshold=parse_values(self.threshold_values.value),
            min_size=parse_values(self.min_size_values.value, int),
        )

    @recorded("sweep.run")
    def run(self, *_args) -> bool:
        """Start a sweep on the current preview region; False (and a status) if it cannot."""
        if self.running or self._closed:
            return False
        parameters, layer = self.inputs.parameters, self.inputs.layer
        if parameters is None:
            self._say(CANNOT_SWEEP + self.inputs.problem)
            return False
        if layer is None:
            self._say(CANNOT_SWEEP + "choose an affinities layer")
            return False
        try:
            region = self.region_of(layer)
            placed = placement(layer, region.shown_start)
        except NotVisible as reason:
            self._say(CANNOT_SWEEP + str(reason))
            return False
        except ValueError as error:
            self._say(CANNOT_SWEEP + str(error))
            return False
        try:
            settings = self.settings(parameters)
        except ValueError as error:
            self._say(CANNOT_SWEEP + str(error))
            return False
        data = level0(layer)
        spatial = tuple(data.shape[1:])
        truth = self.ground_truth.value
        if truth is not None and tuple(level0(truth).shape) != spatial:
            self._say(CANNOT_SWEEP + f"ground truth '{truth.name}' has shape "
                                 f"{tuple(level0(truth).shape)}, the affinities' spatial "
                                 f"shape is {spatial}")
            return False
        mask, seeds = self.inputs.mask, self.inputs.seeds
        for other, what in ((mask, "mask"), (seeds, "seeds")):
            if other is not None and tuple(level0(other).shape) != spatial:
                self._say(CANNOT_SWEEP + f"the {what} has another shape")
                return False

        shown = tuple(slice(a, b) for a, b in zip(region.shown_start, region.shown_stop))
        inputs = SweepInputs(
            affinities=_reader(data, (slice(None),) + region.slices),
            ground_truth=None if truth is None else _reader(level0(truth), shown),
            mask=None if mask is None else _reader(level0(mask), region.slices),
            seeds=None if seeds is None else _reader(level0(seeds), region.slices),
            shown=region.shown_in_crop,
            origin=region.start,
            **dict(zip(("scale", "translate"), world_map(placement(layer)))),
        )
        self._job_number += 1
        self._stop_arrival()
        self._queue_removal(self._own_layers())  # the previous sweep's
        self.table.clear_rows()
        self.results = []
        self._arrived = []
        self.best_result = None
        self._meta = {
            "region": region, "placement": placed, "layer": layer.name,
            "ground_truth": None if truth is None else truth.name,
            "settings": settings, "started": time.perf_counter(),
            "sources": {role: other.source.path for role, other in (
                ("affinities", layer), ("ground truth", truth), ("mask", mask),
                ("seeds", seeds)) if other is not None and other.source.path},
        }
        self.job = self.sweeper().start(inputs, settings)
        self._active = True
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.apply_button.enabled = self.save_button.enabled = False
        workers = min(self.workers.value, len(settings))
        self._say(f"Sweeping {len(settings)} settings on "
                             f"{' x '.join(map(str, region.shape))} voxels "
                             f"({workers} worker{'s' if workers > 1 else ''}) ...")
        self._timer.start()
        return True

    @recorded("sweep.cancel")
    def cancel(self, *_args) -> None:
        if not self.running or self.job.done:
            return
        self.job.cancel()
        self._poll()

    @recorded("sweep.poll")
    def _poll(self) -> None:
        job = self.job
        if job is None:
            self._timer.stop()
            return
        self._arrived.extend(job.poll())
        if self._arriving is not None and not self._arriving.done:
            return  # one layer on its way at a time: its steps are short one by one only
        if self._arrived:
            result = self._arrived.pop(0)
            self.results.append(result)
            self._show(result)
        elif job.done:
            self._timer.stop()
            self._finish()

    # ------------------------------------------------------------------ results
    def _own_layers(self) -> list:
        """The layers this panel made still in the viewer (not copies of them: their
        metadata say the same, and they are the user's)."""
        return [layer for layer in self.viewer.layers
                if is_transient(layer) and layer.metadata.get("sweep_panel") == id(self)]

    def layers(self) -> list:
        """The current sweep's Labels layers in the viewer, in grid order."""
        found = [layer for layer in self._own_layers()
                 if layer.metadata.get("sweep_job") == self._job_number
                 and layer not in self._to_remove]
        return sorted(found, key=lambda layer: layer.metadata.get("sweep_index", 0))

    @recorded("sweep.remove_layers")
    def remove_layers(self, *_args) -> None:
        """Remove the sweep's layers (one by one, at the next turns of the event loop)."""
        self._stop_arrival()
        self._queue_removal(self._own_layers())

    def _stop_arrival(self) -> None:
        if self._arriving is not None:
            self._arriving.cancel()
            self._arriving = None

    @property
    def removing(self) -> bool:
        """True while layers wait to be removed."""
        return bool(self._to_remove)

    def _queue_removal(self, layers) -> None:
        for layer in layers:
            if layer not in self._to_remove:
                self._to_remove.append(layer)
        if self._to_remove and not self._removal_timer.isActive():
            self._removal_timer.start()

    @recorded("sweep.remove_next")
    def _remove_next(self) -> None:
        """One step: show the next hidden layer, or remove the one shown the step before;
        the layers shown all along go last (docs/sweep.md: under Xvfb napari crashed on a
        hidden layer removed, and in 3D on one shown after a shown one was removed)."""
        if self._to_remove:
            layer = self._to_remove[0]
            if layer is not self._revealed:
                hidden = next((candidate for candidate in self._to_remove
                               if candidate in self.viewer.layers and not candidate.visible),
                              None)
                if hidden is not None:  # (hidden by _show_only)
                    self._to_remove.remove(hidden)
                    self._to_remove.insert(0, hidden)
                    hidden.visible = True
                    self._revealed = hidden
                    return
            self._revealed = None
            self._to_remove.pop(0)
            if layer in self.viewer.layers:
                with excluded("sweep.remove_layer"):  # napari's work
                    self.viewer.layers.remove(layer)
        if not self._to_remove:
            self._removal_timer.stop()

    def _show(self, result) -> None:
        """Add a result's layer (main thread), in grid order, and its table row."""
        if result.labels is not None:
            metadata = {
                SWEEP_KEY: True,
                PREVIEW_KEY: True,
                "sweep_panel": id(self),
                "sweep_job": self._job_number,
                "sweep_index": result.setting.index,
                "region_start": self._meta["region"].start,
                "region_stop": self._meta["region"].stop,
                "shown_start": self._meta["region"].shown_start,
                "parameters": result.parameters.model_dump(mode="json"),
            }
            # (no layer.name_overlay to name the grid cells: under Xvfb, napari 0.9
            # crashes drawing after a Labels layer that had one is removed)
            self._arriving = add_labels_without_blocking(
                self.viewer, result.labels, record="sweep.add_layer",
                position=self._insert_position(result.setting.index),
                name=LAYER_PREFIX + result.name, metadata=metadata,
                **self._meta["placement"])
        self.table.add_result(result)
        done, total = len(self.results), len(self._meta["settings"])
        if not self.job.done:
            self._say(f"Sweeping: {done} of {total} settings done "
                                 f"({time.perf_counter() - self._meta['started']:.1f} s)")

    def _insert_position(self, index: int) -> int:
        """Layer-list position keeping the sweep layers in grid order (bottom = first
        cell), above the other layers."""
        layers = list(self.viewer.layers)
        current = self.layers()
        ours = [(layer.metadata.get("sweep_index", 0), i) for i, layer in enumerate(layers)
                if layer in current]
        after = [i for other, i in ours if other > index]
        if after:
            return min(after)
        before = [i for other, i in ours if other < index]
        return max(before) + 1 if before else len(layers)

    def _finish(self) -> None:
        """All results are in (or the sweep was cancelled): rank, highlight, select."""
        job = self.job
        self._active = False
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        self.best_result = best(self.results)
        self.table.show_ranked(self.results, self.best_result)
        self._show_only(self.best_result)
        self.save_button.enabled = bool(self.results)
        self.apply_button.enabled = self.selected_result() is not None
        seconds = (job.finished or time.perf_counter()) - self._meta["started"]
        failed = [r for r in self.results if r.error]
        total = len(self._meta["settings"])
        if job.error:
            text = f"Sweep failed: {job.error}"
        elif job.cancelled:
            text = f"Sweep cancelled: {len(self.results)} of {total} settings done"
        else:
            text = f"Sweep of {total} settings: {seconds:.1f} s"
        if self.best_result is not None:
            text += (f"; best {self.best_result.name} (adapted Rand error "
                     f"{self.best_result.adapted_rand_error:.4f})")
        elif self._meta.get("ground_truth") is None and not job.error:
            text += "; not scored (no ground truth chosen)"
        elif not job.error and self.results and all(r.scores is None for r in self.results):
            text += "; not scored: the ground truth has no labelled voxel in the region"
        if failed:
            text += f"; {len(failed)} failed: {failed[0].error}"
        self._say(text)

    # ------------------------------------------------------------------ table actions
    def selected_result(self):
        index = self.table.selected_index()
        if index is None:
            return self.best_result
        for result in self.results:
            if result.setting.index == index:
                return result
        return None

    @recorded("sweep.selection")
    def _on_selection(self) -> None:
        result = self.selected_result()
        self.apply_button.enabled = (result is not None and result.error is None
                                     and not self.running)
        if result is not None and not self.running:
            self._show_only(result)  # the row's layer is the one to look at

    @recorded("sweep.apply")
    def apply(self, *_args):
        """Copy the selected (default: best) row's parameters into the main widget."""
        result = self.selected_result()
        if result is None or result.error is not None:
            return None
        self.apply_requested.emit(result.parameters)
        self._say(f"Applied {result.name} to the parameters above")
        return result

    def save_csv(self, path):
        """The table as ``sweep --csv`` writes it, with its checks: never onto or into the
        files the sweep read, never over a file that is not an earlier table."""
        check_csv_target(path, self._meta.get("sources", {}))
        return write_csv(self.results, path)

    def _save_dialog(self, *_args) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self.native, "Save the sweep table",
                                              "sweep.csv", "CSV (*.csv)")
        if path:
            try:
                self.save_csv(path)
                self._say(f"Table saved to {path}")
            except (OSError, MutexWatershedError) as error:
                self._say(f"Cannot save: {error}")

    # ------------------------------------------------------------------ grid view
    @recorded("sweep.grid_toggled")
    def _on_grid_toggled(self, on: bool) -> None:
        grid = _grid(self.viewer)
        if grid.enabled != bool(on):
            grid.enabled = bool(on)
        if not self.running:
            self._show_only(self.best_result)

    def _show_only(self, shown) -> None:
        """Hide the sweep's layers but ``shown`` (default: the first that succeeded) so they
        do not cover each other; in grid view every one has its own cell, all are shown."""
        layers = self.layers()
        if shown is None:
            shown = next((r for r in self.results if r.error is None), None)
        keep = None if shown is None else shown.setting.index
        every = bool(_grid(self.viewer).enabled)
        for layer in layers:
            visible = every or layer.metadata.get("sweep_index") == keep
            if layer.visible != visible:
                layer.visible = visible

    @recorded("sweep.grid_changed")
    def _on_grid_changed(self, _event=None) -> None:
        enabled = bool(_grid(self.viewer).enabled)
        if self.grid_view.value != enabled:
            self.grid_view.value = enabled

    # ------------------------------------------------------------------ teardown
    def close_sweep(self) -> None:
        """Cancel a running sweep and stop the worker processes (also done when the panel
        is deleted)."""
        self._timer.stop()
        self._removal_timer.stop()
        self._stop_arrival()
        self._to_remove = []
        if self.job is not None and not self.job.done:
            self.job.cancel()
        self._active = False
        if self._sweeper is not None:
            self._sweeper.close()
            self._sweeper = None
            self._sweeper_box[0] = None

    def _teardown(self) -> None:
        self._closed = True
        disconnect_all(self._connections)


def _reader(data, slices):
    """Reads a crop when called (on the sweep's background thread, not the UI's)."""
    return lambda: np.asarray(data[slices])


def _close_sweeper(box: list) -> None:
    sweeper = box[0]
    if sweeper is not None:
        sweeper.close()
        box[0] = None


__all__ = ["SweepPanel"]
