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
``segment_blockwise``. The whole API lives in this package: arrays (``arrays``), the generic
blockwise runner (``blockwise``), the post-processor (``post_processor``) and the ready-made
worker file (``watershed_worker.py``).
"""

from __future__ import annotations

from pathlib import Path

from .arrays import LocalArrayIdentifier, ZarrArray
from .blockwise import block_unique_ids, require_block_aligned_chunks, segment_blockwise
from .post_processor import (
    DEFAULT_BIAS_VALUES,
    PostProcessor,
    PostProcessorParameters,
    WatershedPostProcessor,
    WatershedPostProcessorParameters,
)

#: The ready-made worker file for ``segment_blockwise``: mutex watershed of each block (with
#: context) into globally unique fragment ids. A file to pass, not a module to import.
WATERSHED_WORKER = Path(__file__).with_name("watershed_worker.py")

__all__ = [
    "DEFAULT_BIAS_VALUES",
    "LocalArrayIdentifier",
    "PostProcessor",
    "WATERSHED_WORKER",
    "PostProcessorParameters",
    "WatershedPostProcessor",
    "WatershedPostProcessorParameters",
    "ZarrArray",
    "block_unique_ids",
    "require_block_aligned_chunks",
    "segment_blockwise",
]
