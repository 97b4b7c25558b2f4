"""The parameter controls, generated from ``WatershedParameters`` (titles, descriptions as
tooltips, ranges, defaults), so the widget, the CLI and saved JSON files describe a run the same
way; and the text forms of offsets, lists and biases in those controls.
"""

from __future__ import annotations

import json
from typing import Any

from magicgui.widgets import CheckBox, FloatSlider, FloatSpinBox, LineEdit, SpinBox

from ..parameters import WatershedParameters

OFFSETS_FROM_LAYER = "layer metadata (or preset)"
OFFSETS_PRESET_3D = "3D: nearest + long range"
OFFSETS_PRESET_2D = "2D: nearest + long range"
OFFSETS_CUSTOM = "custom"
OFFSET_SOURCES = [OFFSETS_FROM_LAYER, OFFSETS_PRESET_3D, OFFSETS_PRESET_2D, OFFSETS_CUSTOM]

INT_MAX = 2**31 - 1


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


#: Fields shown folded under "More parameters": most runs never change them.
FOLDED_FIELDS = ("bias", "sigma", "strides", "randomized_strides", "seed", "invert", "channels",
                 "context")
#: Fields a uniform ``bias`` replaces (disabled while it is set).
PER_OFFSET_BIASES = ("bias_short", "bias_long")


def segmentation_key(parameters: WatershedParameters) -> str:
    """What a preview's segmentation depends on: the per-offset biases drop out while a
    uniform bias replaces them, and the blockwise-only context always does."""
    ignored = {"context"} | (set(PER_OFFSET_BIASES) if parameters.bias is not None else set())
    return json.dumps(parameters.model_dump(mode="json", exclude=ignored), sort_keys=True)
