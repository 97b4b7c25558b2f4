"""Storage: the one place that opens inputs and writes outputs.

- ``paths``: where an array lives (container, dataset) and what layout it has;
- ``inputs``: every supported layout opened as a lazy array with its geometry;
- ``blocks``: block reads for the blockwise workers, in any input format;
- ``outputs``: plain arrays with funlib metadata, OME-Zarr labels with a pyramid;
- ``levels``: the levels of OME-Zarr labels and their complete flag.

Names are loaded on first use, so the blockwise job and its workers, which need only
``blocks`` and ``levels``, do not import funlib.persistence and dask (half a second each).
"""

from importlib import import_module

from ..attributes import COMPLETE_ATTR, PARAMETERS_ATTR
from .paths import ACCEPTED, DEFAULT_INPUT, DEFAULT_OUTPUT, array_path, split_path

_MODULES = {
    "inputs": ("Affinities", "Volume", "open_affinities", "open_volume", "parameters_for",
               "stored_attributes"),
    "blocks": ("TensorStoreArray", "open_block_source"),
    "outputs": ("affinity_chunks", "container_format", "create_array", "create_labels_image",
                "output_format", "prepare_labels", "pyramid_factors", "stored_parameters",
                "write_affinities", "write_labels"),
    "levels": ("labels_level0", "labels_levels", "mark_complete"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}

__all__ = ["ACCEPTED", "COMPLETE_ATTR", "DEFAULT_INPUT", "DEFAULT_OUTPUT", "PARAMETERS_ATTR",
           "array_path", "split_path", *_WHERE]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
