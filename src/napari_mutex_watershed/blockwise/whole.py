"""A region that is one block: one mutex watershed in the job process, no workers.

Worker start-up, the stitch and the relabel pass cost seconds whatever the volume; on a small
region they cost more than the kernel, and one block is also exactly the whole-volume
result. So a run of one block (a region of up to ``block_shape.WHOLE_REGION_VOXELS`` when
no block size is given, or a block size as large as the region) reads the region, segments
it with the engine and writes level 0 and the pyramid itself. Its result equals
``segment()`` on the same region, voxel for voxel.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from ..engine import segment
from ..errors import InvalidValuesError
from ..storage.blocks import open_block_source
from ..storage.chunk_files import open_chunk_files
from .mask_seeds import Guides, check_ids_fit
from .plan import BlockwisePlan
from .relabel_here import pyramid_here, threads
from .task import box, read_region


def run_whole(plan: BlockwisePlan, reporter) -> dict:
    """Segment the plan's region in this process, write level 0 and the pyramid."""
    started = time.perf_counter()
    reporter.emit("even", 0, 1)
    region = (slice(None),) + box(plan.roi_offset,
                                  [o + s for o, s in zip(plan.roi_offset, plan.shape)])
    # nothing else runs meanwhile: the read may take every core the workers would have had
    affinities = read_region(open_block_source(plan.input_path, threads(plan)), region,
                             plan.input_path)
    mask, seeds = Guides(plan).read((0,) * plan.ndim, plan.shape)
    seed_max = 0 if seeds is None else int(seeds.max(initial=0))
    check_ids_fit(0, seed_max)  # before the kernel
    try:
        kernel_started = time.perf_counter()
        labels = segment(affinities, plan.parameters, mask=mask, seeds=seeds)
        kernel_seconds = time.perf_counter() - kernel_started
    except InvalidValuesError as error:  # voxels in the input's own coordinates
        raise error.at(plan.roi_offset) from None
    del affinities
    segments = int(labels.max(initial=0))
    check_ids_fit(segments - seed_max, seed_max)
    output = open_chunk_files(plan.output_path, "r+")
    labels = labels.astype(output.dtype, copy=False)
    output[...] = labels
    reporter.emit("even", 1, 1)
    with ThreadPoolExecutor(threads(plan)) as pool:
        pyramid_here(plan, labels, pool, reporter)
    return {"segments": segments, "kernel_seconds": round(kernel_seconds, 3),
            "blocks": 1, "read_and_write_seconds": round(
                time.perf_counter() - started - kernel_seconds, 3)}
