"""Starting a blockwise run: validate the request, decide on a resume, prepare the output, run.

Nothing is created or deleted before every check has passed and the output's lock is held,
and nothing that is not an earlier output of ours is ever replaced.
"""

from __future__ import annotations

import inspect
import math
import shutil
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from .. import __version__
from ..attributes import (
    BLOCK_SIZE_ATTR,
    COMPLETE_ATTR,
    INPUT_ATTR,
    PARAMETERS_ATTR,
    VERSION_ATTR,
)
from ..engine.weights import DTYPE_ADVICE, is_supported_dtype
from ..errors import (
    BlockwiseError,
    InvalidInputError,
    MutexWatershedError,
    OutputExistsError,
    UsageError,
    checked_arguments,
)
from ..parameters import WatershedParameters, checked_before_offsets
from ..regions import check_offsets_fit, region_inside, voxels
from ..safety import check_output_location, check_output_place
from ..storage import (
    DEFAULT_OUTPUT,
    array_path,
    open_affinities,
    output_format,
    parameters_for,
    prepare_labels,
    split_path,
)
from ..storage.levels import holds_chunks, is_marked_complete
from . import fatal
from .block_shape import block_size_for
from .disk import no_space, no_space_error, write_refusal
from .job import blocks_done, is_complete, run_plan
from .lock import LOCK_SUFFIX, RunLock
from .mask_seeds import open_guide
from .plan import PLAN_FILE, WORK_DIR, BlockwisePlan
from .scheduler import (
    SCHEDULERS,
    WorkerResources,
    apply_options,
    cluster_template,
    parse_options,
)
from .supervise import JobProcess, is_quick

#: The fragments are scratch, written once by a block and read by its odd neighbours and the
#: relabel: zstd at level 1 writes them 40 % and reads them 55 % faster than zarr's default
#: (level 3), for 1.4 times the bytes (4.7 against 3.4 MB at 256^3; docs/blockwise.md, *Speed*).
FRAGMENTS_COMPRESSION_LEVEL = 1
#: How ``segment_blockwise_zarr`` tells ``notify`` that the output was complete before it.
ALREADY_COMPLETE = "already complete"


def work_dir_for(output_path: str | Path) -> Path:
    """Resume state lives beside the output container (``out.zarr.mutex_watershed/labels``),
    outside it, so zarr readers walking the container find nothing foreign. It follows the
    output's real place: one output named through a symlink or a relative path has one lock
    and one plan, so two runs can never write it at once. A dataset named like a lock
    (``seg.lock``) is refused: its work folder would be dataset ``seg``'s lock file."""
    real = array_path(output_path, DEFAULT_OUTPUT).resolve()
    try:
        container, dataset = split_path(real, DEFAULT_OUTPUT)
    except InvalidInputError:  # a link to a folder not named like a container
        container, dataset = split_path(output_path, DEFAULT_OUTPUT)
        container = container.resolve()
    if any(part.endswith(LOCK_SUFFIX) for part in Path(dataset).parts):
        raise InvalidInputError(
            f"an output named {dataset!r} would keep its run files where another output's "
            f"lock goes: choose a name with no part ending in {LOCK_SUFFIX}")
    found = container.with_name(container.name + WORK_DIR) / dataset
    spelled, named = split_path(output_path, DEFAULT_OUTPUT)
    earlier = spelled.with_name(spelled.name + WORK_DIR) / named
    if earlier != found and (earlier / PLAN_FILE).exists() and not (found / PLAN_FILE).exists():
        return earlier  # a run started by that name before the work folder followed links
    return found


def validate_request(
    input_path: str | Path,
    output_path: str | Path,
    parameters: WatershedParameters | None = None,
    block_size: tuple[int, ...] | None = None,
    num_workers: int = 2,
    roi: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
    progress: str = "bar",
    worker_command: str | None = None,
    cluster: str | None = None,
    cluster_options=None,
    max_retries: int = 2,
    timeout: float | None = None,
    zarr_format: int | None = None,
    mask_path: str | Path | None = None,
    seeds_path: str | Path | None = None,
) -> tuple[BlockwisePlan, object]:
    """Check everything that can be checked before any worker starts; return the plan (not
    saved yet) and the opened affinities. Creates and deletes nothing."""
    for name, path in (("input", input_path), ("output", output_path), ("mask", mask_path),
                       ("seeds", seeds_path)):
        if name in ("mask", "seeds") and path is None:
            continue
        if not isinstance(path, (str, Path)):
            raise UsageError(f"the {name} must be a path (str or Path), got {type(path).__name__}")
    parameters = checked_before_offsets(parameters)  # offsets may come from the input
    for name, value in (("num_workers", num_workers), ("max_retries", max_retries)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise UsageError(f"{name} must be an integer, got {value!r}")
    if num_workers < 1:
        raise InvalidInputError("the number of workers must be at least 1")
    if max_retries < 0:
        raise InvalidInputError("the number of retries must be 0 or more")
    if timeout is not None and not timeout > 0:
        raise InvalidInputError("the timeout must be a positive number of seconds")
    if progress not in ("bar", "json", "none"):
        raise InvalidInputError(f"progress must be bar, json or none, got {progress!r}")
    if worker_command is not None and "{command}" not in worker_command:
        raise InvalidInputError("the worker command template needs {command} where the worker "
                                "command goes")
    # --- cluster (scheduler.py): --cluster builds the worker command
    if cluster is not None and worker_command is not None:
        raise InvalidInputError("--cluster and --worker-command exclude each other: --cluster "
                                "builds the worker command (adjust it with --cluster-option)")
    if cluster is not None and cluster not in SCHEDULERS:
        raise InvalidInputError(f"the cluster is one of {', '.join(SCHEDULERS)}, got {cluster!r}")
    if cluster_options and cluster is None:
        raise InvalidInputError("cluster options need --cluster slurm or --cluster lsf")
    apply_options(WorkerResources(), parse_options(cluster_options))  # before anything opens
    # --- end cluster

    affinities = open_affinities(input_path)
    parameters = parameters_for(affinities, parameters)  # and checked against its channels
    spatial = affinities.shape[1:]
    if not all(spatial):
        raise InvalidInputError(f"the affinities are empty (spatial shape {spatial})")
    if any(v <= 0 for v in affinities.voxel_size):
        raise InvalidInputError(
            f"{affinities.path} has voxel size {tuple(affinities.voxel_size)}: every axis needs "
            "a size above 0; fix its metadata")
    if not is_supported_dtype(affinities.dtype):
        raise InvalidInputError(f"affinities have dtype {affinities.dtype}; {DTYPE_ADVICE}")

    guides = {role: open_guide(path, role, affinities)
              for role, path in (("mask", mask_path), ("seeds", seeds_path)) if path is not None}

    ndim = len(spatial)
    roi_offset, shape = region_inside(roi, spatial)
    check_offsets_fit(shape, parameters.offsets)

    given = block_size
    if given is not None:
        given = voxels("the block size", given, ndim, 1)
    block_size = block_size_for(shape, parameters, given)
    context = parameters.context_voxels()
    for b, c, s in zip(block_size, context, shape):
        if b < s and not 1 <= c < b:
            raise InvalidInputError(
                f"context {context} must be at least 1 and smaller than the block size "
                f"{block_size} along each axis that has several blocks: blocks are stitched "
                "where their halos overlap"
            )
    output_location = array_path(output_path, DEFAULT_OUTPUT)
    plan = BlockwisePlan(
        input_path=str(affinities.path.resolve()),
        output_path=str(output_location.resolve() / "0"),  # level 0 of the OME-Zarr labels
        zarr_format=output_format(output_location, zarr_format),
        work_dir=str(work_dir_for(output_path).resolve()),
        parameters=parameters,
        roi_offset=roi_offset,
        shape=shape,
        block_size=block_size,
        num_workers=num_workers,
        max_retries=max_retries,
        timeout=timeout,
        worker_command=worker_command,
        progress=progress,
        mask_path=guides.get("mask"),
        seeds_path=guides.get("seeds"),
    )
    if given is None:
        plan = with_earlier_block(plan)
    if cluster is not None:  # the worker command for the plan's blocks (scheduler.py)
        plan.worker_command = cluster_template(
            cluster, cluster_options, block_size=plan.block_size, halo=plan.odd_context,
            channels=len(parameters.offsets), num_blocks=plan.num_blocks, workers=num_workers)
        plan.cluster = cluster
    # the odd blocks' kernel box holds the bands they label again, whose ids are 32-bit
    if np.prod([b + 2 * c for b, c in zip(plan.block_size, plan.odd_context)],
               dtype=float) >= 2**32:
        raise InvalidInputError(
            f"block size {plan.block_size} with the odd blocks' halo ({plan.odd_context}) has "
            "2**32 voxels or more; labels within a block are 32-bit: use smaller blocks"
        )
    protected = {"input": affinities.path, **guides}
    check_output_place(output_location)
    check_output_location(output_location, protected)
    check_output_location(plan.work_dir, protected, only_ours=False)
    return plan, affinities


def earlier_plan(plan: BlockwisePlan) -> BlockwisePlan | None:
    """The plan saved by the run the output's work folder holds (None: none, or of a format
    this version cannot read)."""
    try:
        return BlockwisePlan.load(Path(plan.work_dir) / PLAN_FILE)
    except Exception:
        return None


def with_earlier_block(plan: BlockwisePlan) -> BlockwisePlan:
    """The plan with the block size of the run its output holds, if that run has the same
    settings otherwise: without ``--block-size`` the same command resumes a run (or finds it
    complete) whose block was given, or chosen by an earlier version."""
    earlier = earlier_plan(plan)
    if earlier is None or tuple(earlier.block_size) == plan.block_size:
        return plan
    candidate = BlockwisePlan(**{**plan.model_dump(), "block_size": tuple(earlier.block_size)})
    return candidate if earlier.identity() == candidate.identity() else plan


def resumable(plan: BlockwisePlan) -> bool:
    """Does the output hold an unfinished or finished run of exactly this job?"""
    if not Path(plan.output_path).exists():
        return False
    earlier = earlier_plan(plan)
    return earlier is not None and earlier.identity() == plan.identity()


def holds_work(plan: BlockwisePlan) -> bool:
    """Does the output at the plan's place hold anything a run computed: is it complete, a
    block recorded or stitched, a chunk of labels written (at any level, or in an array an
    older version wrote in the labels' place)? One that holds nothing (left by a run refused
    for its values, or stopped before its first block) is replaced without ``overwrite``, as
    that loses nothing. Without a plan of ours beside it (an older version's output, one
    whose work folder was removed) what it holds is not known here: it counts as holding
    work."""
    return (earlier_plan(plan) is None or is_complete(plan)
            or is_marked_complete(plan.labels_path) or plan.lookup_path.exists()
            or bool(plan.recorded_blocks()) or holds_chunks(plan.labels_path))


def prepare_output(plan: BlockwisePlan, affinities) -> None:
    """Create the output and the work folder from scratch (the caller holds the lock)."""
    shutil.rmtree(plan.work_dir, ignore_errors=True)
    prepare_labels(
        plan.labels_path,
        affinities,
        chunk_shape=plan.block_size,
        overwrite=True,
        attributes={
            PARAMETERS_ATTR: plan.parameters.model_dump(mode="json"),
            VERSION_ATTR: __version__,
            INPUT_ATTR: plan.input_path,
            BLOCK_SIZE_ATTR: list(plan.block_size),
            COMPLETE_ATTR: False,
        },
        roi_offset=plan.roi_offset,
        shape=plan.shape,
        zarr_format=plan.zarr_format,
    )
    if plan.is_one_block:  # segmented whole into the output: no fragments to stitch
        return
    zarr.create_array(
        str(plan.fragments_path), shape=plan.shape, chunks=fragment_chunks(plan.block_size),
        dtype=np.uint64, fill_value=0, overwrite=True,
        compressors=ZstdCodec(level=FRAGMENTS_COMPRESSION_LEVEL),
    )


def plan_run(input_path, output_path, parameters=None, overwrite: bool = False,
             **options) -> BlockwisePlan:
    """Validate, then resume the same job or (with ``overwrite``, even on the same job,
    whose input may have changed since) start again; save the plan. The caller holds the
    output's lock."""
    plan, affinities = validate_request(input_path, output_path, parameters, **options)
    try:
        if overwrite or not resumable(plan):
            if plan.labels_path.exists() and not overwrite and holds_work(plan):
                raise OutputExistsError(
                    f"{plan.labels_path} already exists (from another run or with other "
                    "settings); pass --overwrite to replace it")
            prepare_output(plan, affinities)
        plan.save()
    except MutexWatershedError:  # (OutputExistsError is a FileExistsError too)
        raise
    except OSError as error:
        if no_space(error):
            raise no_space_error(plan.work_dir) from None
        refusal = write_refusal(error, output_path)
        if refusal is not None:
            raise refusal from None
        raise
    return plan


def fragment_chunks(block_size) -> tuple[int, ...]:
    """Half-block chunks where they tile the block: an odd block reads the even labels in its
    halo, and a block's writes must cover whole chunks (no two workers share a chunk)."""
    return tuple(b // 2 if b % 2 == 0 and b >= 32 else b for b in block_size)


#: The options ``segment_blockwise_zarr`` takes.
RUN_OPTIONS = set(inspect.signature(validate_request).parameters) | {"overwrite"}


@checked_arguments
def segment_blockwise_zarr(input_path, output_path, parameters=None, supervised=True,
                           job: JobProcess | None = None, notify=None, **options) -> Path:
    """Segment a volume blockwise; return the output array path.

    ``options`` are those of ``validate_request`` and ``overwrite``. ``supervised`` runs the
    job in a child process so a signal cancels every worker; ``job`` is that child when the
    caller started it early (the CLI does, so its imports overlap, and Ctrl-C stops a run at
    once). A region of one block (``plan.runs_in_caller``) is segmented in this process,
    with no job process to start; when one was started early, only a region small enough
    for ``supervise.is_quick`` (that job is stopped). ``notify(line)`` hears
    whether the run resumes or was already complete. One run per output at a time: the
    output's lock is held from before anything is deleted until the job ends (the job
    process holds it too).
    """
    unknown = sorted(set(options) - RUN_OPTIONS)
    if unknown:
        raise UsageError(f"segment_blockwise_zarr(): unknown option(s) {', '.join(unknown)}")
    notify = notify or (lambda line: None)
    try:
        where = array_path(output_path, DEFAULT_OUTPUT)
        with RunLock(work_dir_for(output_path), where) as lock:
            try:
                plan = plan_run(input_path, output_path, parameters, **options)
            except BaseException:
                lock.discard()  # refused before anything was made: leave nothing behind
                raise
            if is_complete(plan):
                notify(f"{ALREADY_COMPLETE}: {where.resolve()} (nothing to do)")
                if job is not None:
                    job.abandon()
                return Path(plan.output_path)
            done = blocks_done(plan)
            if any(n for n, _ in done.values()):
                notify(f"resuming: {sum(n for n, _ in done.values())} of "
                       f"{sum(t for _, t in done.values())} block steps are reused ("
                       + ", ".join(f"{step} {n}/{t}" for step, (n, t) in done.items()) + ")")
            plan_path = Path(plan.work_dir) / PLAN_FILE
            quick = is_quick(math.prod(plan.shape))
            if not supervised or (plan.runs_in_caller and (job is None or quick)):
                if job is not None:
                    job.abandon()
                _run_here(plan, plan_path)
                return Path(plan.output_path)
            job = job or JobProcess()
            code = job.run(plan_path, lock_fd=lock.fd)
    except BaseException:
        if job is not None:
            job.abandon()
        raise
    if code != 0:
        raise BlockwiseError(job.error_message(plan, code))
    return Path(plan.output_path)


def _run_here(plan: BlockwisePlan, plan_path: Path) -> None:
    """Run in this process: a region of one block (``plan.runs_in_caller``), or
    any run when not supervised (tests, debugging: no watchdog, so an input error is
    retried). The error raised carries the run's own message, as the job's one line would."""
    if not plan.is_one_block:  # one block has no workers to report a fatal error
        fatal.clear(plan.work_dir)
    try:
        run_plan(plan_path)
    except BlockwiseError as error:
        message = fatal.read_text(Path(plan.work_dir) / fatal.FATAL_FILE)
        if message is None:
            raise
        raise type(error)(message) from None
    except OSError as error:
        if no_space(error):
            raise no_space_error(error.filename or plan.work_dir) from None
        raise
