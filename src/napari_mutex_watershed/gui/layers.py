"""Layers as the plugin sees them: the metadata keys it sets, and level 0 of any layer's data.

No napari import: these are names and a duck-typed helper.
"""

from __future__ import annotations

from ..attributes import BLOCK_SIZE_ATTR, INPUT_ATTR

#: Set on layers the preview and the sweep make (never offered as input, replaced freely).
PREVIEW_KEY = "mutex_watershed_preview"
#: Set on the sweep's result layers.
SWEEP_KEY = "mutex_watershed_sweep"
#: A full run's result layer: the output it shows and the command that made it.
OUTPUT_KEY = "mutex_watershed_output"
COMMAND_KEY = "mutex_watershed_command"
#: A result's provenance under the names its output stores it.
BLOCK_SIZE_KEY = BLOCK_SIZE_ATTR
INPUT_KEY = INPUT_ATTR


def level0(data):
    """Level 0 of a layer (multiscale or not) or of layer data (a list or tuple of levels
    when multiscale), else the data itself."""
    if hasattr(data, "multiscale") and hasattr(data, "data"):  # a layer
        return data.data[0] if data.multiscale else data.data
    return data[0] if isinstance(data, list | tuple) else data
