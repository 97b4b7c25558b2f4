"""``segment_blockwise``: run the worker functions of a Python file over a volume with daisy.

The worker-file contract (see docs/reference-api.md for the full text)::

    read_write_conflict = True      # optional; daisy's default
    fit = "shrink"                  # optional; "valid" drops border blocks that do not fit

    def init_callback_fn(*args, **kwargs): ...            # optional, once, calling process
                                                          # (may ask for the run's geometry)
    def check_function(block, *args, **kwargs) -> bool:   # optional, scheduler, per block
    def spawn_worker(*args, **kwargs) -> dict | None: ... # once per worker process
    def start_worker(block, *args, **kwargs): ...         # per block, in a worker process

``args``/``kwargs`` are the extra arguments given to ``segment_blockwise``; the items of the
dict ``spawn_worker`` returns are added to the keyword arguments of ``start_worker``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import math
import pickle
import shutil
import sys
import tempfile
import uuid
import warnings
from pathlib import Path
from types import ModuleType

import daisy
import numpy as np
from daisy import logging as daisy_logging
from funlib.geometry import Coordinate, Roi

from ..errors import InvalidInputError, UsageError

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.pkl"
REQUIRED = ("spawn_worker", "start_worker")
FITS = ("valid", "overhang", "shrink")


# ---------------------------------------------------------------------------- loading
def _dumps(value) -> bytes:
    """cloudpickle when installed (lambdas, closures), else pickle; both load with pickle."""
    try:
        import cloudpickle
    except ImportError:  # pragma: no cover - daisy installs it in practice
        return pickle.dumps(value)
    return cloudpickle.dumps(value)


def load_worker_file(path: str | Path, extra_path: str | None = None) -> ModuleType:
    """Import a worker file by path under a private module name (never clobbers a module)."""
    path = Path(path)
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    name = f"_segment_blockwise_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    if extra_path and extra_path not in sys.path:
        sys.path.append(extra_path)  # the file's own directory: sibling imports keep working
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidInputError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickle and friends look modules up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _check_contract(module: ModuleType, path: Path) -> tuple[bool, str]:
    missing = [n for n in REQUIRED if not callable(getattr(module, n, None))]
    if missing:
        raise InvalidInputError(
            f"{path} must define the worker functions {' and '.join(REQUIRED)}; "
            f"missing: {', '.join(missing)}"
        )
    for optional in ("check_function", "init_callback_fn"):
        value = getattr(module, optional, None)
        if value is not None and not callable(value):
            raise InvalidInputError(f"{path}: {optional} must be a function")
    read_write_conflict = getattr(module, "read_write_conflict", True)
    fit = getattr(module, "fit", "shrink")
    if not isinstance(read_write_conflict, bool):
        raise InvalidInputError(f"{path}: read_write_conflict must be True or False")
    if fit not in FITS:
        raise InvalidInputError(f"{path}: fit must be one of {FITS}, got {fit!r}")
    return read_write_conflict, fit


class _Job:
    """What every worker process reads from the temporary directory."""

    def __init__(self, tmpdir: str):
        self.tmpdir = tmpdir
        with open(Path(tmpdir) / CONFIG_FILE, "rb") as f:
            config = pickle.load(f)
        self.args = config["args"]
        self.kwargs = config["kwargs"]
        self.module = load_worker_file(Path(tmpdir) / config["file_name"], config["source_dir"])


class FileWorker:
    """daisy worker function (no arguments): one worker process running the file's functions.

    It loads the copied file and the pickled arguments, calls ``spawn_worker`` once, then
    takes blocks from daisy and calls ``start_worker`` for each. The set-up happens before
    the first block is taken, so it does not count against the block timeout. An exception
    from ``start_worker`` marks the block failed (daisy retries it) and ends the process, as
    in daisy's own worker loop; daisy starts a new one.

    Picklable by design: daisy ships it to each spawned worker as just the temporary
    directory.
    """

    def __init__(self, tmpdir: str):
        self.tmpdir = tmpdir

    def __call__(self) -> None:
        job = _Job(self.tmpdir)
        setup = job.module.spawn_worker(*job.args, **job.kwargs)
        if setup is not None and not isinstance(setup, dict):
            raise TypeError(
                "spawn_worker must return None or a dict of keyword arguments for "
                f"start_worker, got {type(setup).__name__}"
            )
        setup = setup or {}
        client = daisy.Client()
        while True:
            with client.acquire_block() as block:
                if block is None:
                    return
                job.module.start_worker(block, *job.args, **job.kwargs, **setup)


class _BoundCheck:
    """``check_function(block, *args, **kwargs)`` as daisy's one-argument check function."""

    def __init__(self, function, args, kwargs):
        self.function, self.args, self.kwargs = function, args, kwargs

    def __call__(self, block) -> bool:
        return bool(self.function(block, *self.args, **self.kwargs))


# ---------------------------------------------------------------------------- running
def _worker_restarts(total_roi: Roi, write_roi: Roi, max_retries: int) -> int:
    """Enough worker restarts for every block to use all its retries (a failing block
    crashes its worker process, and daisy counts that as a restart)."""
    blocks = math.prod(-(-int(t) // int(w)) for t, w in zip(total_roi.shape, write_roi.shape))
    return max(10, blocks * (max_retries + 1))


def segment_blockwise(
    segment_function_file: str | Path,
    context: Coordinate,
    total_roi: Roi,
    read_roi: Roi,
    write_roi: Roi,
    num_workers: int = 16,
    max_retries: int = 2,
    timeout=None,
    upstream_tasks=None,
    keep_tmpdir=False,
    *args,
    **kwargs,
) -> bool:
    """Run the worker functions of ``segment_function_file`` over ``total_roi`` with daisy.

    ``total_roi``, ``read_roi``, ``write_roi`` and ``context`` are in world units.
    ``read_roi`` and ``write_roi`` describe one block (usually ``read_roi =
    write_roi.grow(context, context)``). daisy's total ROI is ``total_roi`` grown by
    ``context``, so the write ROIs of the blocks tile ``total_roi`` and the read ROIs of
    border blocks reach ``context`` past it (read them with a fill value or clip).

    ``num_workers`` worker processes run at once; a block whose ``start_worker`` raises, or
    that runs longer than ``timeout`` seconds (``None``: no limit), is retried up to
    ``max_retries`` times. ``upstream_tasks`` are daisy tasks that must finish first. Extra
    ``args`` and ``kwargs`` reach ``init_callback_fn``, ``spawn_worker``, ``start_worker``
    and ``check_function``; they must be picklable.

    A temporary directory holds a copy of the file, the pickled arguments and daisy's worker
    logs; it is removed at the end unless ``keep_tmpdir``.

    Returns True only if every block (of this task and of ``upstream_tasks``) succeeded.
    Raises ``InvalidInputError`` for a worker file that breaks the contract.
    """
    source = Path(segment_function_file)
    if not source.is_file():
        raise InvalidInputError(f"worker file {source} does not exist")
    for name, value, least in (("num_workers", num_workers, 1), ("max_retries", max_retries, 0)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise UsageError(f"{name} must be an integer, got {value!r}")
        if value < least:
            raise InvalidInputError(f"{name} must be at least {least}, got {value}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(
            timeout, int | float | np.integer | np.floating) or not timeout > 0):
        raise InvalidInputError(f"the timeout must be a positive number of seconds or None, "
                                f"got {timeout!r}")
    context = Coordinate(context)
    total_roi, read_roi, write_roi = (
        Roi(r.offset, r.shape) for r in (total_roi, read_roi, write_roi)
    )
    if len({context.dims, total_roi.dims, read_roi.dims, write_roi.dims}) != 1:
        raise InvalidInputError(
            f"the context ({context.dims}D) and the total, read and write ROIs "
            f"({total_roi.dims}D, {read_roi.dims}D, {write_roi.dims}D) must have as many axes")

    tmpdir = tempfile.mkdtemp(prefix=f"segment_blockwise_{source.stem}_")
    module_name = None
    previous_log_dir = daisy_logging.get_log_basedir()
    try:
        shutil.copy2(source, Path(tmpdir) / source.name)
        config = {"file_name": source.name, "source_dir": str(source.resolve().parent),
                  "args": args, "kwargs": kwargs}
        (Path(tmpdir) / CONFIG_FILE).write_bytes(_dumps(config))
        module = load_worker_file(Path(tmpdir) / source.name, str(source.resolve().parent))
        module_name = module.__name__
        read_write_conflict, fit = _check_contract(module, source)

        init_callback_fn = getattr(module, "init_callback_fn", None)
        if init_callback_fn is not None:
            geometry = {"total_roi": total_roi, "read_roi": read_roi, "write_roi": write_roi,
                        "context": context}
            wanted = inspect.getfullargspec(init_callback_fn).kwonlyargs
            init_callback_fn(*args, **kwargs, **{k: v for k, v in geometry.items() if k in wanted})
        check_function = getattr(module, "check_function", None)

        with warnings.catch_warnings():
            # the file chose check_function; upstream_tasks is our documented interface
            warnings.filterwarnings("ignore", r"Task\(check_function", UserWarning)
            warnings.filterwarnings("ignore", r"Task\(upstream_tasks", DeprecationWarning)
            task = daisy.Task(
                f"{source.stem}_{uuid.uuid4().hex[:8]}",
                total_roi=total_roi.grow(context, context),
                read_roi=read_roi,
                write_roi=write_roi,
                process_function=FileWorker(tmpdir),
                check_function=(
                    _BoundCheck(check_function, args, kwargs) if check_function else None
                ),
                read_write_conflict=read_write_conflict,
                fit=fit,
                max_workers=num_workers,
                max_retries=max_retries,
                max_worker_restarts=_worker_restarts(total_roi, write_roi, max_retries),
                timeout=float("inf") if timeout is None else timeout,
                tracking_path=False,
                upstream_tasks=list(upstream_tasks) if upstream_tasks else None,
            )
        daisy_logging.set_log_basedir(Path(tmpdir) / "logs")
        try:
            states = daisy.run_blockwise([task], return_states=True, summary=False)
        except RuntimeError as error:  # daisy abandons a task whose workers keep dying
            logger.error("segment_blockwise(%s) gave up: %s", source, error)
            return False
        failed = {
            task_id: state for task_id, state in states.items()
            if state.completed_count < state.total_block_count
        }
        for task_id, state in failed.items():
            logger.error(
                "segment_blockwise(%s): task %s finished %d of %d blocks (%d failed): %s",
                source, task_id, state.completed_count, state.total_block_count,
                state.failed_count, (state.last_worker_error or "no message").strip(),
            )
        return not failed
    finally:
        daisy_logging.set_log_basedir(previous_log_dir)
        if module_name is not None:
            sys.modules.pop(module_name, None)
        if keep_tmpdir:
            logger.info("segment_blockwise kept its temporary directory %s", tmpdir)
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)


# ---------------------------------------------------------------------------- helpers
def require_block_aligned_chunks(array, total_roi: Roi, write_roi: Roi) -> None:
    """Refuse an output whose chunks straddle blocks: two workers writing parts of one
    chunk at the same time lose each other's writes (zarr rewrites whole chunks)."""
    chunk = Coordinate(array.data.chunks[-array.dims:]) * array.voxel_size
    start = total_roi.offset - array.roi.offset
    straddles = any(
        (w % c or s % c) and extent > w  # a single block along an axis shares nothing along it
        for w, s, c, extent in zip(write_roi.shape, start, chunk, total_roi.shape)
    )
    if straddles:
        raise InvalidInputError(
            f"{array} has chunks of {tuple(chunk)} (world units) that do not tile the blocks "
            f"(write ROI {tuple(write_roi.shape)} from {tuple(total_roi.offset)}): parallel "
            "writes would overwrite each other. Create it with write_size = the write ROI shape"
        )


def block_unique_ids(labels: np.ndarray, write_roi: Roi, output_roi: Roi, voxel_size) -> np.ndarray:
    """Give the segments of one block ids that no other block can produce.

    ``labels`` (0 = background) cover ``write_roi``. Each segment gets 1 + the flat index,
    inside ``output_roi``, of its first voxel (in C order): segments of different blocks
    are disjoint, so their first voxels differ. Ids stay below the voxel count of the
    output plus one, whatever the block order or grid, so uint64 always suffices.
    """
    voxel_size = Coordinate(voxel_size)
    labels = np.asarray(labels)
    ids, first = np.unique(labels.ravel(), return_index=True)
    position = np.unravel_index(first, labels.shape)
    offset = (write_roi.offset - output_roi.offset) / voxel_size
    shape = tuple(int(s) for s in output_roi.shape / voxel_size)
    global_position = tuple(p + int(o) for p, o in zip(position, offset))
    flat = np.ravel_multi_index(global_position, shape).astype(np.uint64) + np.uint64(1)
    flat[ids == 0] = 0
    return flat[np.searchsorted(ids, labels)]
