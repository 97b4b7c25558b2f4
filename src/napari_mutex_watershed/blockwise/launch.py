"""Starting a blockwise run: validate the request, prepare the output, run the plan."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import zarr

from .. import __version__
from ..attributes import COMPLETE_ATTR, PARAMETERS_ATTR
from ..errors import InvalidInputError, OutputExistsError
from ..parameters import WatershedParameters
from ..storage import (
    DEFAULT_OUTPUT,
    array_path,
    open_affinities,
    output_format,
    parameters_for,
    prepare_labels,
    split_path,
)
from .plan import PLAN_FILE, WORK_DIR, BlockwisePlan
from .run import BlockwiseError, run_plan
from .supervise import JobProcess

DEFAULT_BLOCK_SIZE_3D = (64, 64, 64)
DEFAULT_BLOCK_SIZE_2D = (512, 512)


def work_dir_for(output_path: str | Path) -> Path:
    """Resume state lives beside the output container (``out.zarr.mutex_watershed/labels``),
    outside it, so zarr readers walking the container find nothing foreign."""
    container, dataset = split_path(output_path, DEFAULT_OUTPUT)
    return container.with_name(container.name + WORK_DIR) / dataset


def plan_run(
    input_path: str | Path,
    output_path: str | Path,
    parameters: WatershedParameters | None = None,
    block_size: tuple[int, ...] | None = None,
    num_workers: int = 2,
    roi: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
    overwrite: bool = False,
    progress: str = "bar",
    worker_command: str | None = None,
    max_retries: int = 2,
    timeout: float | None = None,
    zarr_format: int | None = None,
) -> BlockwisePlan:
    """Validate everything, create (or reopen for a resume) the output, save the plan."""
    affinities = open_affinities(input_path)
    parameters = parameters_for(affinities, parameters or WatershedParameters())
    spatial = tuple(int(s) for s in affinities.array.shape[1:])
    if len(spatial) != parameters.ndim:
        raise InvalidInputError(
            f"the affinities are {len(spatial)}D but the offsets are {parameters.ndim}D"
        )
    n_channels = affinities.num_channels
    wanted = parameters.channels or range(len(parameters.offsets))
    if parameters.channels is None and n_channels != len(parameters.offsets):
        raise InvalidInputError(
            f"{affinities.path} has {n_channels} channels but there are "
            f"{len(parameters.offsets)} offsets"
        )
    if max(wanted) >= n_channels:
        raise InvalidInputError(f"channel {max(wanted)} selected but there are {n_channels}")
    if np.dtype(affinities.array.dtype) not in (np.float32, np.float64, np.uint8):
        raise InvalidInputError(
            f"affinities have dtype {affinities.array.dtype}; use float32, float64 or uint8"
        )

    roi_offset, shape = roi if roi is not None else ((0,) * len(spatial), spatial)
    roi_offset, shape = tuple(map(int, roi_offset)), tuple(map(int, shape))
    if len(roi_offset) != len(spatial) or len(shape) != len(spatial) or any(
        o < 0 or s <= 0 or o + s > n for o, s, n in zip(roi_offset, shape, spatial)
    ):
        raise InvalidInputError(f"roi {roi_offset} + {shape} is not inside the volume {spatial}")

    block_size = tuple(int(b) for b in (block_size or (
        DEFAULT_BLOCK_SIZE_3D if len(spatial) == 3 else DEFAULT_BLOCK_SIZE_2D)))
    block_size = tuple(min(b, s) for b, s in zip(block_size, shape))
    context = parameters.context_voxels()
    if len(block_size) != len(spatial):
        raise InvalidInputError(f"block size {block_size} needs {len(spatial)} values")
    for b, c, s in zip(block_size, context, shape):
        if b < s and not 1 <= c < b:
            raise InvalidInputError(
                f"context {context} must be at least 1 and smaller than the block size "
                f"{block_size} along each axis that has several blocks: blocks are stitched "
                "where their halos overlap"
            )
    if num_workers < 1:
        raise InvalidInputError("num_workers must be at least 1")
    output_location = array_path(output_path, DEFAULT_OUTPUT)
    work_dir = work_dir_for(output_path)
    plan = BlockwisePlan(
        input_path=str(affinities.path.resolve()),
        output_path=str(output_location.resolve() / "0"),  # level 0 of the OME-Zarr labels
        zarr_format=output_format(output_location, zarr_format),
        work_dir=str(work_dir.resolve()),
        parameters=parameters,
        roi_offset=roi_offset,
        shape=shape,
        block_size=block_size,
        num_workers=num_workers,
        max_retries=max_retries,
        timeout=timeout,
        worker_command=worker_command,
        progress=progress,
    )
    # the odd blocks' kernel box holds the bands they label again, whose ids are 32-bit
    if np.prod([b + 2 * c for b, c in zip(block_size, plan.odd_context)], dtype=float) >= 2**32:
        raise InvalidInputError(
            f"block size {block_size} with the odd blocks' halo ({plan.odd_context}) has "
            "2**32 voxels or more; labels within a block are 32-bit: use smaller blocks"
        )

    previous = work_dir / PLAN_FILE
    if output_location.exists() and not overwrite:
        if previous.exists() and BlockwisePlan.load(previous).identity() == plan.identity():
            plan.save()  # same job: resume (workers, progress may differ)
            return plan
        raise OutputExistsError(
            f"{output_location} already exists (from another run or with other settings); "
            "pass --overwrite to replace it"
        )
    shutil.rmtree(work_dir, ignore_errors=True)
    prepare_labels(
        output_location,
        affinities,
        chunk_shape=block_size,
        overwrite=overwrite,
        attributes={
            PARAMETERS_ATTR: parameters.model_dump(mode="json"),
            "mutex_watershed_version": __version__,
            "mutex_watershed_input": str(affinities.path.resolve()),
            "mutex_watershed_block_size": list(block_size),
            COMPLETE_ATTR: False,
        },
        roi_offset=roi_offset,
        shape=shape,
        zarr_format=plan.zarr_format,
    )
    zarr.create_array(
        str(plan.fragments_path), shape=shape, chunks=fragment_chunks(block_size), dtype=np.uint64,
        fill_value=0, overwrite=True,
    )
    plan.save()
    return plan


def fragment_chunks(block_size) -> tuple[int, ...]:
    """Half-block chunks where they tile the block: an odd block reads the even labels in its
    halo, and a block's writes must cover whole chunks (no two workers share a chunk)."""
    return tuple(b // 2 if b % 2 == 0 and b >= 32 else b for b in block_size)


def segment_blockwise_zarr(input_path, output_path, parameters=None, supervised=True,
                           job: JobProcess | None = None, **options) -> Path:
    """Segment a zarr volume blockwise; return the output array path.

    ``supervised`` runs the job in a child process so a signal cancels every worker; ``job``
    is that child when the caller started it early (the CLI does, so its imports overlap).
    """
    if supervised and job is None:
        job = JobProcess()
    try:
        plan = plan_run(input_path, output_path, parameters, **options)
    except BaseException:
        if job is not None:
            job.abandon()
        raise
    plan_path = Path(plan.work_dir) / PLAN_FILE
    if supervised:
        code = job.run(plan_path)
        if code != 0:
            raise BlockwiseError(f"the blockwise job stopped with exit code {code}")
    else:
        if job is not None:
            job.abandon()
        run_plan(plan_path)
    return Path(plan.output_path)


