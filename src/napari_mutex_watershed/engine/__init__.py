"""Pure numpy engine: no Qt, napari or daisy import anywhere below this package."""

from .labels import finalize, smallest_label_dtype
from .segment import run_kernel, segment
from .weights import check_affinities, edge_slices, edge_weights

__all__ = [
    "check_affinities",
    "edge_slices",
    "edge_weights",
    "finalize",
    "run_kernel",
    "segment",
    "smallest_label_dtype",
]
