"""Example worker file for ``segment_blockwise``: threshold + connected components per block.

Foreground is where the mean over the input's channels is above ``threshold``; each block
labels its connected foreground components (``scipy.ndimage.label``) inside its write ROI
and writes them with ids no other block uses. Components are not joined across blocks.

Run this file to try it on sample data:  python docs/examples/threshold_worker.py
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_mutex_watershed.dacapo import (
    LocalArrayIdentifier,
    ZarrArray,
    block_unique_ids,
    require_block_aligned_chunks,
)

# blocks read and write only their own write ROI
read_write_conflict = False
fit = "shrink"


def init_callback_fn(input_array_identifier, output_array_identifier, threshold=0.5, *,
                     total_roi, write_roi):
    """Once, before any block: create the uint64 output over ``total_roi``, one chunk per
    block (keyword-only ``total_roi``/``write_roi`` ask segment_blockwise for the geometry)."""
    source = ZarrArray.open_from_array_identifier(input_array_identifier, mode="r")
    output = ZarrArray.create_from_array_identifier(
        output_array_identifier, source.spatial_axes, total_roi, None, source.voxel_size,
        np.uint64, mode="a", write_size=write_roi.shape,
    )
    require_block_aligned_chunks(output, total_roi, write_roi)


def spawn_worker(input_array_identifier, output_array_identifier, threshold=0.5):
    """Once per worker process: open the arrays; start_worker receives them as keywords."""
    return {
        "input_array": ZarrArray.open_from_array_identifier(input_array_identifier, mode="r"),
        "output_array": ZarrArray.open_from_array_identifier(output_array_identifier),
    }


def start_worker(block, input_array_identifier, output_array_identifier, threshold=0.5, *,
                 input_array, output_array):
    """One block: threshold, label, write."""
    roi = block.write_roi.intersect(output_array.roi)
    data = input_array[roi]
    if input_array.num_channels is not None:
        data = data.mean(axis=0)
    components, _ = ndimage.label(data > threshold)
    output_array[roi] = block_unique_ids(components, roi, output_array.roi, output_array.voxel_size)


if __name__ == "__main__":
    import tempfile
    from pathlib import Path

    from funlib.geometry import Coordinate, Roi

    from napari_mutex_watershed.dacapo import segment_blockwise
    from napari_mutex_watershed.storage import write_affinities
    from napari_mutex_watershed.synthetic import sample_volume

    container = Path(tempfile.mkdtemp()) / "sample.zarr"
    affinities, _, offsets = sample_volume((24, 64, 64))
    write_affinities(container / "affinities", affinities, offsets)
    source = LocalArrayIdentifier(container, "affinities")
    target = LocalArrayIdentifier(container, "components")
    total_roi = ZarrArray.open_from_array_identifier(source, mode="r").roi
    block = Roi((0, 0, 0), (12, 32, 32))
    ok = segment_blockwise(__file__, Coordinate(0, 0, 0), total_roi, block, block, 2,
                           input_array_identifier=source, output_array_identifier=target,
                           threshold=0.7)
    labels = ZarrArray.open_from_array_identifier(target, mode="r")[total_roi]
    print(f"success: {ok}; {len(np.unique(labels)) - 1} components in {target}")
