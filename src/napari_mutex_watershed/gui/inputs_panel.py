"""The Input and Parameters sections: the affinities layer, its offsets, mask and seeds, and the
parameter controls. Whatever changes (a control, a chosen layer, a layer's data), the panel
sends what they describe now as one ``Inputs`` on ``changed``; the preview, full-run and sweep
panels act on the latest one.
"""

from __future__ import annotations

import json
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from magicgui.widgets import ComboBox, Container, Label, LineEdit, PushButton
from psygnal import Signal
from pydantic import ValidationError

from ..engine.weights import DTYPE_ADVICE, is_supported_dtype
from ..errors import MutexWatershedError
from ..parameters import (
    OFFSETS_2D,
    OFFSETS_3D,
    WatershedParameters,
    as_parameters,
    check_channels_exist,
    default_offsets,
    offsets_of_channels,
    read_parameters_file,
    validation_problems,
)
from .callback_time import recorded
from .layers import is_transient, level0
from .lifecycle import disconnect_all
from .parameter_widgets import (
    FOLDED_FIELDS,
    OFFSET_SOURCES,
    OFFSETS_CUSTOM,
    OFFSETS_FROM_LAYER,
    OFFSETS_PRESET_2D,
    OFFSETS_PRESET_3D,
    PER_OFFSET_BIASES,
    build_parameter_widgets,
    format_offsets,
    format_value,
    parse_bias,
    parse_number_list,
    parse_offsets,
)
from .sections import Section, show_text, wrapping


def identity(layer) -> int:
    """A layer's identity: plugins see layers through proxies, a new one per access."""
    return id(getattr(layer, "__wrapped__", layer))


@dataclass(frozen=True)
class Inputs:
    """What the Input and Parameters sections describe at one moment."""

    layer: Any = None  # the affinities layer
    parameters: WatershedParameters | None = None  # None: ``problem`` says why
    problem: str = ""  # what stops a run, or a note on the parameters ('' if nothing)
    mask: Any = None
    seeds: Any = None
    versions: dict = field(default_factory=dict)  # layer identity -> edits of its data so far

    def key_of(self, layer):
        """A layer and the version of its data (None for no layer)."""
        return None if layer is None else (identity(layer), self.versions.get(identity(layer), 0))


class InputsPanel:
    """The Input section (``input_section``) and the Parameters section (``parameters_section``)."""

    changed = Signal(object)  # Inputs

    def __init__(self, viewer) -> None:
        self.viewer = viewer
        self._loading = False
        self._versions: dict[int, int] = {}
        self._watched: list[tuple[Any, list]] = []
        self.latest = Inputs()

        self.affinities = ComboBox(
            name="affinities", label="Affinities", choices=self._affinity_choices,
            tooltip="Image layer with a channel axis first: (C, Z, Y, X) or (C, Y, X).",
        )
        self.offsets_source = ComboBox(
            name="offsets_source", label="Offsets from", choices=OFFSET_SOURCES,
            value=OFFSETS_FROM_LAYER,
            tooltip="Where the offsets come from: the layer's metadata['offsets'] (files "
            "read by this plugin and the sample data have them), a preset, or your own.",
        )
        offsets_field = WatershedParameters.model_fields["offsets"]
        self.offsets_text = LineEdit(
            name="offsets", label=offsets_field.title,
            tooltip=offsets_field.description + " Format: 1,0,0; 0,1,0; ...",
        )
        self.mask = ComboBox(
            name="mask", label="Mask", choices=self._labels_choices, nullable=True,
            value=None, tooltip="Optional Labels layer: only voxels > 0 are segmented.",
        )
        self.seeds = ComboBox(
            name="seeds", label="Seeds", choices=self._labels_choices, nullable=True,
            value=None, tooltip="Optional Labels layer of seed ids: each id ends up in one "
            "segment, and different ids never merge. Edits re-run the preview.",
        )
        self.message = Label(name="message", value="")
        self.message.native.setStyleSheet("color: #ff6060;")
        wrapping(self.message, 3)
        self.input_section = Container(
            name="input_section", widgets=[self.affinities, self.offsets_source,
                                           self.offsets_text, self.mask, self.seeds,
                                           self.message])

        self.fields = build_parameter_widgets()
        self.save_button = PushButton(name="save_button", text="Save...")
        self.load_button = PushButton(name="load_button", text="Load...")
        self.reset_button = PushButton(name="reset_button", text="Defaults")
        self.save_button.tooltip = "Save the parameters to a JSON file (the CLI's --params)."
        self.load_button.tooltip = "Load parameters from a JSON file."
        self.reset_button.tooltip = "Reset the parameters to their defaults."
        buttons = Container(widgets=[self.save_button, self.load_button, self.reset_button],
                            layout="horizontal", labels=False, name="parameter_buttons")
        buttons.margins = (0, 0, 0, 0)
        buttons.label = ""  # (a row of buttons, no title beside it)
        folded = Container(name="more_parameters",
                           widgets=[self.fields[name] for name in FOLDED_FIELDS])
        self.more = Section("More parameters", folded.native, expanded=False)
        self.parameters_section = Container(
            name="parameters_section",
            widgets=[w for name, w in self.fields.items() if name not in FOLDED_FIELDS])
        self.parameters_section.native.layout().addWidget(self.more)
        self.parameters_section.append(buttons)

        for widget in self.fields.values():
            widget.changed.connect(self._on_changed)
        self.offsets_text.changed.connect(self._on_changed)
        self.offsets_source.changed.connect(self._on_changed)
        for combo in (self.affinities, self.mask, self.seeds):
            combo.changed.connect(self._on_layer_chosen)
        self.save_button.changed.connect(self._save_dialog)
        self.load_button.changed.connect(self._load_dialog)
        self.reset_button.changed.connect(self.reset_parameters)
        layers = viewer.layers.events
        self._connections = [(layers.inserted, self._on_layers_changed),
                             (layers.removed, self._on_layers_changed),
                             (layers.reordered, self._on_layers_changed)]
        for emitter, callback in self._connections:
            emitter.connect(callback)
        self.reset_choices()

    # ------------------------------------------------------------------ choices
    def _affinity_choices(self, _widget=None):
        return [(layer.name, layer) for layer in self.viewer.layers
                if _is_affinities_layer(layer)]

    def _labels_choices(self, _widget=None):
        from napari.layers import Labels

        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, Labels) and not is_transient(layer)]

    def reset_choices(self) -> None:
        for combo in (self.affinities, self.mask, self.seeds):
            combo.reset_choices()

    @recorded("inputs.layers_changed")
    def _on_layers_changed(self, _event=None) -> None:
        self.reset_choices()
        latest = self.latest
        if (latest.layer, latest.mask, latest.seeds) != (
                self.affinities.value, self.mask.value, self.seeds.value):
            # a chosen layer was removed: the combo shows another (or none) without a word
            self._on_layer_chosen()

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
            return default_offsets(spatial), (
                f"The layer has no offsets in its metadata: using the {spatial}D preset."
            )
        return list(OFFSETS_3D), ""

    def offsets_for(self, channels, source: str | None = None) -> list[tuple[int, ...]]:
        """The offsets in force for ``channels``: the layer's or a preset's describe every
        channel of the layer, so those of the chosen ones; typed ones are for the chosen."""
        offsets = self.resolved_offsets(source)[0]
        layer = self.affinities.value
        if (source or self.offsets_source.value) == OFFSETS_CUSTOM or layer is None:
            return offsets
        return offsets_of_channels(offsets, channels, int(level0(layer).shape[0]))

    def parameters(self) -> WatershedParameters:
        """The parameters the controls describe; raises ValueError if they are invalid."""
        values: dict[str, Any] = {}
        for name, widget in self.fields.items():
            value = widget.value
            if isinstance(widget, LineEdit):
                try:
                    value = parse_bias(value) if name == "bias" else parse_number_list(value)
                except ValueError:
                    raise ValueError(f"{widget.label}: cannot read {widget.value!r}") from None
            values[name] = value
        values["offsets"] = self.offsets_for(values.get("channels"))
        try:
            return WatershedParameters(**values)
        except ValidationError as error:
            raise ValueError(validation_problems(error)) from None

    @contextmanager
    def loading(self):
        """Set several controls at once: one ``changed`` at the end, not one per control."""
        self._loading = True
        try:
            yield
        finally:
            self._loading = False

    def show_values(self, parameters: WatershedParameters) -> None:
        """Show ``parameters`` in the field controls (no ``changed``: inside ``loading``)."""
        for name, widget in self.fields.items():
            value = getattr(parameters, name)
            try:
                widget.value = format_value(value) if isinstance(widget, LineEdit) else value
            except (ValueError, TypeError):
                pass
        self.offsets_text.value = format_offsets(parameters.offsets)

    def set_parameters(self, parameters: WatershedParameters) -> None:
        """Show ``parameters`` in the controls (offsets: 'custom' unless they are the layer's,
        or the layer's of the channels chosen)."""
        with self.loading():
            try:
                current = self.offsets_for(parameters.channels, OFFSETS_FROM_LAYER)
            except ValueError:  # channels the layer does not have: the check says so
                current = None
            if current is None or list(parameters.offsets) != list(current):
                self.offsets_source.value = OFFSETS_CUSTOM
            else:  # the layer's (a preset kept would give the preset's for those channels)
                self.offsets_source.value = OFFSETS_FROM_LAYER
            self.show_values(parameters)
        self._on_changed()

    @recorded("inputs.reset_parameters")
    def reset_parameters(self, *_args) -> None:
        self.offsets_source.value = OFFSETS_FROM_LAYER
        self.set_parameters(WatershedParameters(offsets=self.resolved_offsets()[0]))

    def save_parameters(self, path) -> None:
        self.parameters().save(path)

    def load_parameters(self, path) -> None:
        """A file that names no offsets keeps those in force (the layer's, a preset or typed;
        of the first two, those of the channels it chooses), as the command does."""
        values = read_parameters_file(path)
        chosen = values.get("channels") if isinstance(values, dict) else None
        self.set_parameters(as_parameters(values, f"parameters file {path}",
                                          self.offsets_for(chosen)))

    def _save_dialog(self, *_args) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(
            self.parameters_section.native, "Save parameters", "mutex-watershed.json",
            "JSON (*.json)")
        if path:
            try:
                self.save_parameters(path)
            except (ValueError, OSError) as error:
                self.show_message(f"Cannot save: {error}")

    def _load_dialog(self, *_args) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self.parameters_section.native, "Load parameters",
                                              "", "JSON (*.json)")
        if path:
            try:
                self.load_parameters(path)
            except (ValueError, OSError, MutexWatershedError) as error:
                self.show_message(f"Cannot load {path}: {error}")

    # ------------------------------------------------------------------ validation
    def show_message(self, text: str) -> None:
        show_text(self.message, text)

    def clear_message(self, text: str) -> None:
        """``text`` (a failure another panel showed) is over: the inputs' own problem, if
        the line still shows it; another message (a file not loaded) stays."""
        if self.message.value == text:
            self.show_message(self.latest.problem)

    def check(self) -> tuple[WatershedParameters | None, str]:
        """(parameters, problem): what is wrong with the layer/parameters, '' if nothing."""
        layer = self.affinities.value
        try:
            offsets, note = self.resolved_offsets()
        except (ValueError, json.JSONDecodeError):
            return None, f"Offsets: cannot read {self.offsets_text.value!r} (e.g. 1,0,0; 0,1,0)"
        if self.offsets_source.value != OFFSETS_CUSTOM and not self._loading:
            with self.loading():
                self.offsets_text.value = format_offsets(offsets)
        try:
            parameters = self.parameters()
        except ValueError as error:
            return None, str(error)
        if layer is None:
            return parameters, "Choose an affinities layer (an Image layer, channels first)."
        data = level0(layer)
        spatial = data.ndim - 1
        if not is_supported_dtype(data.dtype):
            return None, f"'{layer.name}' has dtype {data.dtype}: {DTYPE_ADVICE}."
        if parameters.ndim != spatial:
            return None, (f"The offsets are {parameters.ndim}D but '{layer.name}' has "
                          f"{spatial} spatial axes (shape {tuple(data.shape)}).")
        channels = int(data.shape[0])
        if parameters.channels is not None:
            try:
                check_channels_exist(parameters.channels, channels)
            except ValueError as error:
                return None, str(error)
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
    @recorded("inputs.changed")
    def _on_changed(self, *_args) -> None:
        """Recompute what the controls describe and send it (``changed``)."""
        if self._loading:
            return
        self.offsets_text.enabled = self.offsets_source.value == OFFSETS_CUSTOM
        uniform = bool(self.fields["bias"].value.strip())
        for name in PER_OFFSET_BIASES:  # a uniform bias replaces them
            self.fields[name].enabled = not uniform
        parameters, problem = self.check()
        self.show_message(problem)
        self.latest = Inputs(self.affinities.value, parameters, problem, self.mask.value,
                             self.seeds.value, dict(self._versions))
        self.changed.emit(self.latest)

    @recorded("inputs.layer_chosen")
    def _on_layer_chosen(self, *_args) -> None:
        self._unwatch_layers()
        # napari's ``refresh()`` after data edited in place emits only ``_extent_augmented``
        # of these (``set_data`` also follows contrast limits and every pan of a pyramid), and
        # on a hidden layer nothing: a layer shown again may hold other data
        edits = ("_extent_augmented", "visible")
        for layer, events in (
            (self.affinities.value, ("data", "scale", "translate", "rotate", "shear", "affine",
                                     "metadata", *edits)),
            (self.mask.value, ("data", "paint", "scale", "translate", *edits)),
            (self.seeds.value, ("data", "paint", "scale", "translate", *edits)),
        ):
            if layer is None:
                continue
            emitters = [getattr(layer.events, e) for e in events if hasattr(layer.events, e)]
            callback = self._layer_callback(layer)
            for emitter in emitters:
                emitter.connect(callback)
            self._watched.append((callback, emitters))
        self._on_changed()

    def _layer_callback(self, layer):
        key = identity(layer)
        ref = weakref.ref(self)
        shown = [bool(layer.visible)]  # (napari says "visible" on every set, changed or not)

        def on_layer_event(event=None):
            panel = ref()
            if getattr(event, "type", None) == "visible":
                was, shown[0] = shown[0], bool(getattr(event.source, "visible", True))
                if was or not shown[0]:
                    return  # only a layer shown again may hold other data
            if panel is not None:
                panel._versions[key] = panel._versions.get(key, 0) + 1
                panel._on_changed()

        return on_layer_event

    def _unwatch_layers(self) -> None:
        for callback, emitters in self._watched:
            disconnect_all([(emitter, callback) for emitter in emitters])
        self._watched = []

    def stop_listening(self) -> None:
        """The widget goes away: stop listening to the viewer and the layers."""
        disconnect_all(self._connections)
        self._unwatch_layers()


def _is_affinities_layer(layer) -> bool:
    from napari.layers import Image

    if not isinstance(layer, Image) or layer.rgb:
        return False
    return level0(layer).ndim in (3, 4)
