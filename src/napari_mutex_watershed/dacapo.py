"""DaCapo's watershed post-processor API, on this project's engine.

The names and calls of ``dacapo.experiments.tasks.post_processors.watershed_post_processor``,
with every documented parameter doing what its documentation says::

    from funlib.geometry import Coordinate
    from napari_mutex_watershed.dacapo import LocalArrayIdentifier, WatershedPostProcessor

    post_processor = WatershedPostProcessor(offsets=[(1, 0, 0), (0, 1, 0), (0, 0, 1)])
    post_processor.set_prediction(LocalArrayIdentifier("run.zarr", "prediction"))
    for parameters in post_processor.enumerate_parameters():
        output = post_processor.process(
            parameters, LocalArrayIdentifier("run.zarr", f"output/{parameters.id}"),
            num_workers=4, block_size=Coordinate(64, 64, 64),
        )

See docs/reference-api.md for the differences from DaCapo and the worker-file contract of
``segment_blockwise``.
"""

from __future__ import annotations

from .reference.arrays import LocalArrayIdentifier, ZarrArray
from .reference.blockwise import block_unique_ids, require_block_aligned_chunks, segment_blockwise
from .reference.post_processor import (
    DEFAULT_BIAS_VALUES,
    PostProcessor,
    PostProcessorParameters,
    WatershedPostProcessor,
    WatershedPostProcessorParameters,
)

__all__ = [
    "DEFAULT_BIAS_VALUES",
    "LocalArrayIdentifier",
    "PostProcessor",
    "PostProcessorParameters",
    "WatershedPostProcessor",
    "WatershedPostProcessorParameters",
    "ZarrArray",
    "block_unique_ids",
    "require_block_aligned_chunks",
    "segment_blockwise",
]
