"""The napari dock widget: parameters of a mutex-watershed run and a live preview.

The controls are generated from ``WatershedParameters`` (titles, descriptions as tooltips,
ranges, defaults), so the widget, the CLI and saved JSON files describe a run the same way.
The widget only wires the UI: the visible crop comes from ``visible_region``, the
segmentation from ``engine.segment`` running in the preview process (``preview``).
"""

from __future__ import annotations

import json
import time
import weakref
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)
from pydantic import ValidationError
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy

from ..engine.weights import SUPPORTED_DTYPES
from ..parameters import OFFSETS_2D, OFFSETS_3D, WatershedParameters
from . import settings as settings_store
from .callback_time import excluded, recorded
from .layers import PREVIEW_KEY, level0
from .lifecycle import disconnect_all, stop_with_widget
from .preview import PreviewRequest, PreviewService
from .run_job import FullRunController
from .sweep_panel import SweepPanel
from .visible_region import NotVisible, placement, visible_region

PREVIEW_LAYER_NAME = "preview"

OFFSETS_FROM_LAYER = "layer metadata (or preset)"
OFFSETS_PRESET_3D = "3D: nearest + long range"
OFFSETS_PRESET_2D = "2D: nearest + long range"
OFFSETS_CUSTOM = "custom"
OFFSET_SOURCES = [OFFSETS_FROM_LAYER, OFFSETS_PRESET_3D, OFFSETS_PRESET_2D, OFFSETS_CUSTOM]

INT_MAX = 2**31 - 1


# ------------------------------------------------------------------------ text <-> values
def format_offsets(offsets) -> str:
    return "; ".join(",".join(str(int(v)) for v in o) for o in offsets)


def parse_offsets(text: str) -> list[tuple[int, ...]]:
    """'1,0,0; 0,1,0' or JSON '[[1,0,0],[0,1,0]]' -> [(1,0,0), (0,1,0)]."""
    text = text.strip()
    if text.startswith("["):
        return [tuple(int(v) for v in o) for o in json.loads(text)]
    groups = [g for g in text.replace("(", "").replace(")", ";").split(";") if g.strip()]
    return [tuple(int(v) for v in g.replace(" ", ",").split(",") if v.strip()) for g in groups]


def parse_number_list(text: str, kind=int):
    """'' -> None; '1, 3, 3' -> [1, 3, 3]."""
    text = text.strip().strip("[]")
    if not text:
        return None
    return [kind(v) for v in text.replace(";", ",").replace(" ", ",").split(",") if v.strip()]


def parse_bias(text: str):
    """'' -> None; '0.5' -> 0.5; '0.4, 0.7' -> [0.4, 0.7]."""
    values = parse_number_list(text, float)
    if values is None:
        return None
    return values[0] if len(values) == 1 and "," not in text else values


def format_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _bounds(field) -> tuple[float | None, float | None]:
    low = high = None
    for item in field.metadata:
        low = getattr(item, "ge", low)
        high = getattr(item, "le", high)
    return low, high


def build_parameter_widgets() -> dict[str, Any]:
    """One magicgui widget per ``WatershedParameters`` field (offsets excluded)."""
    widgets: dict[str, Any] = {}
    for name, field in WatershedParameters.model_fields.items():
        if name == "offsets":
            continue
        common = {"name": name, "label": field.title, "tooltip": field.description}
        default = field.get_default(call_default_factory=True)
        low, high = _bounds(field)
        if field.annotation is bool:
            widget = CheckBox(value=default, **{**common, "text": field.title, "label": ""})
        elif field.annotation is float and low is not None and high is not None:
            if high - low <= 1:
                widget = FloatSlider(value=default, min=low, max=high, step=0.01, **common)
            else:
                widget = FloatSpinBox(value=default, min=low, max=high, step=0.1, **common)
        elif field.annotation is int:
            widget = SpinBox(
                value=default,
                min=int(low) if low is not None else -INT_MAX,
                max=int(high) if high is not None else INT_MAX,
                **common,
            )
        else:  # optional lists and unions: free text, empty = default
            widget = LineEdit(value=format_value(default), **common)
            placeholders = {
                "bias": "empty: short/long biases; or 0.5; or one per offset",
                "strides": "empty: all edges; e.g. 1, 3, 3",
                "channels": "empty: all channels in order",
                "context": "empty: from the offsets (blockwise runs only)",
            }
            if name in placeholders:
                widget.native.setPlaceholderText(placeholders[name])
        widgets[name] = widget
    return widgets


# ------------------------------------------------------------------------ the widget
class MutexWatershedWidget(Container):
    """Dock widget: affinities, parameters, live preview, save/load."""

    def __init__(self, napari_viewer, *, preview_timeout: float | None = None) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self._loading = False
        self._closed = False
        self._request_id = 0
        self._shown_id = -1
        self._last_key = None
        self._last_dispatch = 0.0
        self._data_tokens: dict[int, int] = {}
        self._preview_layer = None
        self._watched_layers: list[tuple[Any, list]] = []
        self._service: PreviewService | None = None
        self._preview_timeout = preview_timeout
        self.last_result = None  # the PreviewResult shown last (for tests and benchmarks)
        self.debounce_ms = 150
        self.leading_edge = True

        # ---------------------------------------------------------------- inputs
        self.affinities = ComboBox(
            name="affinities", label="Affinities", choices=self._affinity_choices,
            tooltip="Image layer with a channel axis first: (C, Z, Y, X) or (C, Y, X).",
        )
        self.offsets_source = ComboBox(
            name="offsets_source", label="Offsets", choices=OFFSET_SOURCES,
            value=OFFSETS_FROM_LAYER,
            tooltip="Where the offsets come from: the layer's metadata['offsets'] (files "
            "read by this plugin and the sample data have them), a preset, or your own.",
        )
        offsets_field = WatershedParameters.model_fields["offsets"]
        self.offsets_text = LineEdit(
            name="offsets", label=offsets_field.title,
            tooltip=offsets_field.description + " Format: 1,0,0; 0,1,0; ...",
        )
        self.message = Label(name="message", label="", value="")
        self.message.native.setStyleSheet("color: #ff6060;")
        self.fields = build_parameter_widgets()
        self.mask = ComboBox(
            name="mask", label="Mask", choices=self._labels_choices, nullable=True,
            value=None, tooltip="Optional Labels layer: only voxels > 0 are segmented.",
        )
        self.seeds = ComboBox(
            name="seeds", label="Seeds", choices=self._labels_choices, nullable=True,
            value=None, tooltip="Optional Labels layer of seed ids: each id ends up in one "
            "segment, and different ids never merge. Edits re-run the preview.",
        )
        # ---------------------------------------------------------------- preview
        self.preview = CheckBox(
            name="preview", text="Preview", label="", value=False,
            tooltip="Segment the visible region and show it in a 'preview' layer; "
            "updates when parameters, the view or the slice change.",
        )
        self.context_slices = SpinBox(
            name="context_slices", label="Context slices", value=3, min=0, max=64,
            tooltip="2D view of 3D affinities: segment this many extra slices on each side "
            "of the current one, so offsets along the hidden axis still act. Only the "
            "current slice is shown.",
        )
        self.max_box_3d = SpinBox(
            name="max_box_3d", label="Max 3D box", value=96, min=8, max=512,
            tooltip="3D view: segment at most this many voxels along each axis, centred on "
            "the view (the time grows faster than the volume).",
        )
        self.max_box_2d = SpinBox(
            name="max_box_2d", label="Max 2D size", value=1024, min=16, max=8192,
            tooltip="2D view: segment at most this many pixels along each axis, centred on "
            "the view.",
        )
        self.status = Label(name="status", label="", value="Preview off")
        for label, lines in ((self.message, 3), (self.status, 2)):
            label.label = ""  # (magicgui turns label="" in the constructor into the name)
            # a fixed size: new texts must not resize the dock, which would resize the
            # canvas (a redraw, and another visible region)
            label.native.setWordWrap(True)
            label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
            label.native.setFixedHeight(label.native.fontMetrics().lineSpacing() * lines + 4)
        self.save_button = PushButton(name="save_button", text="Save parameters...")
        self.load_button = PushButton(name="load_button", text="Load parameters...")
        self.reset_button = PushButton(name="reset_button", text="Reset to defaults")

        self.extend([self.affinities, self.offsets_source, self.offsets_text, self.message])
        self.extend(list(self.fields.values()))
        self.extend([self.mask, self.seeds, self.preview, self.context_slices,
                     self.max_box_3d, self.max_box_2d, self.status,
                     self.save_button, self.load_button, self.reset_button])
        # ---------------------------------------------------------------- full run
        self.full_run = FullRunController(self)
        self.extend(self.full_run.widgets)

        # ---------------------------------------------------------------- timers
        self._debounce = QTimer(self.native)
        self._debounce.setSingleShot(True)
        self._debounce.timeout.connect(self._dispatch)
        self._poll = QTimer(self.native)
        self._poll.setInterval(20)
        self._poll.timeout.connect(self._poll_results)
        self._save_timer = QTimer(self.native)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(500)
        self._save_timer.timeout.connect(self.remember)

        # ---------------------------------------------------------------- wiring
        self.restore()
        for widget in self.fields.values():
            widget.changed.connect(self._on_parameters_changed)
        self.offsets_text.changed.connect(self._on_parameters_changed)
        self.offsets_source.changed.connect(self._on_offsets_source_changed)
        self.affinities.changed.connect(self._on_layer_changed)
        self.affinities.changed.connect(self.full_run.update_default_output)
        self.mask.changed.connect(self._on_layer_changed)
        self.seeds.changed.connect(self._on_layer_changed)
        for widget in (self.context_slices, self.max_box_3d, self.max_box_2d):
            widget.changed.connect(self._on_view_option_changed)
        self.preview.changed.connect(self._on_preview_toggled)
        self.save_button.changed.connect(self._save_dialog)
        self.load_button.changed.connect(self._load_dialog)
        self.reset_button.changed.connect(self.reset_parameters)

        viewer = self.viewer
        camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
        self._connections = [
            (camera.events.center, self._schedule),
            (camera.events.zoom, self._schedule),
            (camera.events.angles, self._schedule),
            (viewer.dims.events.point, self._schedule),
            (viewer.dims.events.ndisplay, self._schedule),
            (viewer.dims.events.order, self._schedule),
            (viewer.layers.events.inserted, self._on_layers_changed),
            (viewer.layers.events.removed, self._on_layers_changed),
            (viewer.layers.events.reordered, self._on_layers_changed),
        ]
        if hasattr(viewer, "canvas"):
            self._connections.append((viewer.canvas.events.size, self._schedule))
        for emitter, callback in self._connections:
            emitter.connect(callback)

        self.reset_choices()
        self._on_layer_changed()
        self.sweep_panel = SweepPanel(self)
        self.native.layout().addWidget(self.sweep_panel.native)
        # kill the worker processes when the widget goes away, whoever closes it
        self._service_box = [None]
        self._finalizer = stop_with_widget(self, self._service_box, _close_service)

    # ------------------------------------------------------------------ choices
    def _affinity_choices(self, _widget=None):
        return [
            (layer.name, layer)
            for layer in self.viewer.layers
            if _is_affinities_layer(layer)
        ]

    def _labels_choices(self, _widget=None):
        from napari.layers import Labels

        return [
            (layer.name, layer)
            for layer in self.viewer.layers
            if isinstance(layer, Labels) and not layer.metadata.get(PREVIEW_KEY)
        ]

    @recorded("widget.layers_changed")
    def _on_layers_changed(self, _event=None) -> None:
        if self._closed:
            return
        if self._preview_layer is not None and self._preview_layer not in self.viewer.layers:
            self._preview_layer = None  # deleted by the user: make a new one
            self._last_key = None
            self._schedule()
        self.reset_choices()

    # ------------------------------------------------------------------ parameters
    def resolved_offsets(self, source: str | None = None) -> tuple[list[tuple[int, ...]], str]:
        """The offsets in force (or those ``source`` would give) and a note on their origin."""
        source = source or self.offsets_source.value
        layer = self.affinities.value
        if source == OFFSETS_CUSTOM:
            return parse_offsets(self.offsets_text.value), ""
        if source == OFFSETS_PRESET_3D:
            return list(OFFSETS_3D), ""
        if source == OFFSETS_PRESET_2D:
            return list(OFFSETS_2D), ""
        if layer is not None:
            stored = layer.metadata.get("offsets")
            if stored:
                return [tuple(int(v) for v in o) for o in stored], ""
            spatial = level0(layer).ndim - 1
            preset = OFFSETS_2D if spatial == 2 else OFFSETS_3D
            return list(preset), (
                f"The layer has no offsets in its metadata: using the {spatial}D preset."
            )
        return list(OFFSETS_3D), ""

    def parameters(self) -> WatershedParameters:
        """The parameters the controls describe; raises ValueError if they are invalid."""
        values: dict[str, Any] = {"offsets": self.resolved_offsets()[0]}
        for name, widget in self.fields.items():
            value = widget.value
            if isinstance(widget, LineEdit):
                try:
                    value = parse_bias(value) if name == "bias" else parse_number_list(value)
                except ValueError:
                    raise ValueError(f"{widget.label}: cannot read {widget.value!r}") from None
            values[name] = value
        try:
            return WatershedParameters(**values)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{where}: {first['msg']}") from None

    def set_parameters(self, parameters: WatershedParameters) -> None:
        """Show ``parameters`` in the controls (offsets: 'custom' unless they match)."""
        self._loading = True
        try:
            for name, widget in self.fields.items():
                value = getattr(parameters, name)
                widget.value = format_value(value) if isinstance(widget, LineEdit) else value
            current, _ = self.resolved_offsets(OFFSETS_FROM_LAYER)
            if list(parameters.offsets) != list(current):
                self.offsets_source.value = OFFSETS_CUSTOM
            self.offsets_text.value = format_offsets(parameters.offsets)
        finally:
            self._loading = False
        self._on_parameters_changed()

    @recorded("widget.reset_parameters")
    def reset_parameters(self, *_args) -> None:
        self.offsets_source.value = OFFSETS_FROM_LAYER
        self.set_parameters(WatershedParameters(offsets=self.resolved_offsets()[0]))

    def save_parameters(self, path) -> None:
        self.parameters().save(path)

    def load_parameters(self, path) -> None:
        self.set_parameters(WatershedParameters.load(path))

    def _save_dialog(self, *_args) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(
            self.native, "Save parameters", "mutex-watershed.json", "JSON (*.json)"
        )
        if path:
            try:
                self.save_parameters(path)
            except (ValueError, OSError) as error:
                self._show_message(f"Cannot save: {error}")

    def _load_dialog(self, *_args) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self.native, "Load parameters", "", "JSON (*.json)")
        if path:
            try:
                self.load_parameters(path)
            except (ValueError, OSError) as error:
                self._show_message(f"Cannot load {path}: {error}")

    # ------------------------------------------------------------------ remembering
    @recorded("widget.remember")
    def remember(self) -> None:
        """Write the current values to the settings file (read at the next start)."""
        values: dict[str, Any] = {
            "offsets_source": self.offsets_source.value,
            "context_slices": self.context_slices.value,
            "max_box_3d": self.max_box_3d.value,
            "max_box_2d": self.max_box_2d.value,
            "workers": self.full_run.workers.value,
            "block_size": self.full_run.block_size.value,
        }
        try:
            values["parameters"] = json.loads(self.parameters().to_json())
        except ValueError:
            return  # keep the last valid values
        settings_store.save_settings(values)

    def restore(self) -> None:
        """Read the values remembered from the last session, ignoring what is invalid."""
        values = settings_store.load_settings()
        if not values:
            return
        self._loading = True
        try:
            for key in ("context_slices", "max_box_3d", "max_box_2d"):
                try:
                    if key in values:
                        getattr(self, key).value = values[key]
                except (ValueError, TypeError):
                    pass
            for key in ("workers", "block_size"):
                try:
                    if key in values:
                        getattr(self.full_run, key).value = values[key]
                except (ValueError, TypeError):
                    pass
            if values.get("offsets_source") in OFFSET_SOURCES:
                self.offsets_source.value = values["offsets_source"]
            try:
                parameters = WatershedParameters.model_validate(values.get("parameters", {}))
            except ValidationError:
                return
            for name, widget in self.fields.items():
                value = getattr(parameters, name)
                try:
                    widget.value = format_value(value) if isinstance(widget, LineEdit) else value
                except (ValueError, TypeError):
                    pass
            self.offsets_text.value = format_offsets(parameters.offsets)
        finally:
            self._loading = False

    # ------------------------------------------------------------------ validation
    def _show_message(self, text: str) -> None:
        self.message.value = text
        self.message.tooltip = text

    def check(self) -> tuple[WatershedParameters | None, str]:
        """(parameters, problem): what is wrong with the layer/parameters, '' if nothing."""
        layer = self.affinities.value
        try:
            offsets, note = self.resolved_offsets()
        except (ValueError, json.JSONDecodeError):
            return None, f"Offsets: cannot read {self.offsets_text.value!r} (e.g. 1,0,0; 0,1,0)"
        if self.offsets_source.value != OFFSETS_CUSTOM and not self._loading:
            self._loading = True
            try:
                self.offsets_text.value = format_offsets(offsets)
            finally:
                self._loading = False
        try:
            parameters = self.parameters()
        except ValueError as error:
            return None, str(error)
        if layer is None:
            return parameters, "Choose an affinities layer (an Image layer, channels first)."
        data = level0(layer)
        spatial = data.ndim - 1
        if np.dtype(data.dtype) not in [np.dtype(d) for d in SUPPORTED_DTYPES]:
            return None, (f"'{layer.name}' has dtype {data.dtype}: affinities must be float32, "
                          "float64 (0..1) or uint8 (0..255).")
        if parameters.ndim != spatial:
            return None, (f"The offsets are {parameters.ndim}D but '{layer.name}' has "
                          f"{spatial} spatial axes (shape {tuple(data.shape)}).")
        channels = int(data.shape[0])
        if parameters.channels is not None:
            bad = [c for c in parameters.channels if c >= channels]
            if bad:
                return None, f"Channels {bad} do not exist: '{layer.name}' has {channels}."
        elif channels != len(parameters.offsets):
            return None, (
                f"'{layer.name}' has {channels} channels but there are "
                f"{len(parameters.offsets)} offsets: give one offset per channel (custom "
                "offsets), or choose the channels to use."
            )
        for other, what in ((self.mask.value, "Mask"), (self.seeds.value, "Seeds")):
            if other is not None and tuple(other.data.shape) != tuple(data.shape[1:]):
                return None, (f"{what} '{other.name}' has shape {tuple(other.data.shape)}, the "
                              f"affinities' spatial shape is {tuple(data.shape[1:])}.")
        return parameters, note

    # ------------------------------------------------------------------ events
    @recorded("widget.parameters_changed")
    def _on_parameters_changed(self, *_args) -> None:
        if self._loading or self._closed:
            return
        _, problem = self.check()
        self._show_message(problem)
        self._save_timer.start()
        self._schedule()

    @recorded("widget.offsets_source_changed")
    def _on_offsets_source_changed(self, *_args) -> None:
        self.offsets_text.enabled = self.offsets_source.value == OFFSETS_CUSTOM
        self._on_parameters_changed()

    @recorded("widget.view_option_changed")
    def _on_view_option_changed(self, *_args) -> None:
        self._save_timer.start()
        self._schedule()

    @recorded("widget.layer_changed")
    def _on_layer_changed(self, *_args) -> None:
        self._unwatch_layers()
        for layer, events in (
            (self.affinities.value, ("data", "scale", "translate", "metadata")),
            (self.mask.value, ("data", "paint", "scale", "translate")),
            (self.seeds.value, ("data", "paint", "scale", "translate")),
        ):
            if layer is None:
                continue
            emitters = [getattr(layer.events, e) for e in events if hasattr(layer.events, e)]
            callback = self._make_layer_callback(layer)
            for emitter in emitters:
                emitter.connect(callback)
            self._watched_layers.append((callback, emitters))
        self._offsets_source_enable()
        self._on_parameters_changed()

    def _offsets_source_enable(self) -> None:
        self.offsets_text.enabled = self.offsets_source.value == OFFSETS_CUSTOM

    def _make_layer_callback(self, layer):
        key = _identity(layer)
        ref = weakref.ref(self)

        def on_layer_event(_event=None):
            widget = ref()
            if widget is not None:
                widget._data_tokens[key] = widget._data_tokens.get(key, 0) + 1
                widget._on_parameters_changed()

        return on_layer_event

    def _unwatch_layers(self) -> None:
        for callback, emitters in self._watched_layers:
            for emitter in emitters:
                try:
                    emitter.disconnect(callback)
                except (RuntimeError, ValueError, TypeError):
                    pass
        self._watched_layers = []

    @recorded("preview.toggled")
    def _on_preview_toggled(self, on: bool) -> None:
        if on:
            self._last_key = None
            self.service()  # start the worker now; it warms up while the crop is chosen
            self._poll.start()
            self._dispatch()
        else:
            self._debounce.stop()
            self._request_id += 1
            if self._service is not None:
                self._service.cancel(self._request_id)
            self._poll.stop()
            self.status.value = "Preview off"

    # ------------------------------------------------------------------ preview
    def service(self) -> PreviewService:
        if self._service is None or self._service.closed:
            kwargs = {} if self._preview_timeout is None else {"timeout": self._preview_timeout}
            self._service = PreviewService(**kwargs)
            self._service_box[0] = self._service
        return self._service

    @recorded("preview.schedule")
    def _schedule(self, *_args) -> None:
        """Ask for a new preview: now if idle (leading edge), else after the debounce."""
        if self._closed or not self.preview.value:
            return
        if self._debounce.isActive():
            self._debounce.start(self.debounce_ms)
            return
        quiet = (time.perf_counter() - self._last_dispatch) * 1000 >= self.debounce_ms
        if self.leading_edge and quiet and self._service is not None and self._service.is_idle():
            # at the next turn of the event loop, not inside the event: the emitter may
            # not have finished its change (napari emits `paint` before writing the data)
            self._debounce.start(0)
        else:
            self._debounce.start(self.debounce_ms)

    def current_region(self, layer=None):
        """The crop of ``layer`` (default: the affinities) to segment for the current view."""
        layer = layer if layer is not None else self.affinities.value
        viewer = self.viewer
        camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
        canvas_size = viewer.canvas.size if hasattr(viewer, "canvas") else (600, 800)
        data = level0(layer)
        ndisplay = viewer.dims.ndisplay
        return visible_region(
            data_shape=tuple(data.shape),
            spatial_axes=tuple(range(1, data.ndim)),
            world_point=tuple(viewer.dims.point),
            displayed=tuple(viewer.dims.displayed),
            camera_center=tuple(camera.center),
            zoom=float(camera.zoom),
            canvas_size=tuple(canvas_size),
            world_to_data=layer.world_to_data,
            context=self.context_slices.value if ndisplay == 2 else 0,
            max_size=self.max_box_3d.value if ndisplay == 3 else self.max_box_2d.value,
        )

    @recorded("preview.dispatch")
    def _dispatch(self, *_args) -> None:
        """Send the newest preview request to the worker (main thread, cheap)."""
        if self._closed or not self.preview.value:
            return
        parameters, problem = self.check()
        self._show_message("" if parameters is not None else problem)
        if parameters is None:
            self.status.value = "Preview paused: fix the problem above"
            return
        layer = self.affinities.value
        if layer is None:
            self.status.value = "Preview: no affinities layer"
            return
        try:
            region = self.current_region(layer)
        except NotVisible as reason:
            self.status.value = f"Preview: {reason}"
            return
        except ValueError as error:
            self._show_message(str(error))
            return
        data = level0(layer)
        token = self._data_tokens.get(_identity(layer), 0)
        crop_key = (_identity(layer), id(data), token, region.start, region.stop)
        mask = self._crop(self.mask.value, region)
        seeds = self._crop(self.seeds.value, region)
        key = (crop_key, parameters.to_json(), region.shown_start, region.shown_stop,
               self._layer_key(self.mask.value), self._layer_key(self.seeds.value))
        if key == self._last_key:
            return
        self._last_key = key
        self._last_dispatch = time.perf_counter()
        self._request_id += 1
        slices = (slice(None),) + region.slices
        request = PreviewRequest(
            id=self._request_id,
            crop_key=crop_key,
            affinities=lambda: np.asarray(data[slices]),
            parameters_json=parameters.to_json(),
            shown=region.shown_in_crop,
            mask=mask,
            seeds=seeds,
            meta={"region": region, "layer": layer.name, "parameters": parameters},
        )
        self.status.value = f"Preview: computing {' x '.join(map(str, region.shape))} ..."
        self.service().submit(request)
        if not self._poll.isActive():
            self._poll.start()

    def _layer_key(self, layer):
        if layer is None:
            return None
        return _identity(layer), self._data_tokens.get(_identity(layer), 0)

    @staticmethod
    def _crop(layer, region):
        if layer is None:
            return None
        return np.ascontiguousarray(np.asarray(level0(layer)[region.slices]))

    @recorded("preview.poll")
    def _poll_results(self) -> None:
        if self._service is None:
            return
        for result in self._service.results():
            result.meta["received"] = time.perf_counter()
            if result.id != self._request_id:
                continue  # overtaken: a newer request is on its way
            self._apply(result)

    @recorded("preview.apply")
    def _apply(self, result) -> None:
        """Show a result (main thread only)."""
        if result.error is not None:
            self._last_key = None  # let the next event try again
            self._show_message(f"Preview failed: {result.error}")
            self.status.value = "Preview failed"
            return
        region = result.meta["region"]
        layer = self.affinities.value
        if layer is None:
            return
        scale, translate = placement(region, layer.scale[1:], layer.translate[1:])
        metadata = {
            PREVIEW_KEY: True,
            "region_start": region.start,
            "region_stop": region.stop,
            "shown_start": region.shown_start,
            "parameters": json.loads(result.meta["parameters"].to_json()),
        }
        preview = self._preview_layer
        if preview is not None and preview in self.viewer.layers and (
            preview.ndim != result.labels.ndim
        ):
            self._preview_layer = None
            self.viewer.layers.remove(preview)  # another layer's dimensionality
            preview = None
        if preview is None or preview not in self.viewer.layers:
            with excluded("preview.add_layer"):  # napari's vispy set-up, once
                self._preview_layer = self.viewer.add_labels(
                    result.labels, name=PREVIEW_LAYER_NAME, scale=scale, translate=translate,
                    metadata=metadata, units=tuple(layer.units)[1:],
                )
        else:
            preview.scale = scale
            preview.translate = translate
            preview.metadata = metadata
            preview.data = result.labels
        self._shown_id = result.id
        self.last_result = result
        self.status.value = (
            f"Preview of {' x '.join(map(str, region.shape))} voxels: "
            f"{result.compute_seconds:.2f} s"
        )
        self.status.tooltip = (
            f"Segmented voxels {region.start} to {region.stop} (exclusive) of "
            f"'{layer.name}'; {result.compute_seconds:.2f} s in the worker, "
            f"{result.total_seconds:.2f} s from the request to the result."
        )

    # ------------------------------------------------------------------ teardown
    def close_preview(self) -> None:
        """Stop the preview and its worker processes (also done when the widget is deleted)."""
        self.sweep_panel.close_sweep()
        self._debounce.stop()
        self._poll.stop()
        if self._service is not None:
            self._service.close()
            self._service = None
            self._service_box[0] = None

    def _teardown(self) -> None:
        """The Qt side is gone: stop listening to the viewer and the layers."""
        self._closed = True
        disconnect_all(self._connections)
        self._unwatch_layers()
        self.full_run.shutdown()  # a running full-run job is stopped with its workers


def _identity(layer) -> int:
    """A layer's identity: plugins see layers through proxies, a new one per access."""
    return id(getattr(layer, "__wrapped__", layer))


def _close_service(box: list) -> None:
    service = box[0]
    if service is not None:
        service.close()
        box[0] = None


def _is_affinities_layer(layer) -> bool:
    from napari.layers import Image

    if not isinstance(layer, Image) or layer.rgb:
        return False
    return level0(layer).ndim in (3, 4)
