"""A full run's files, without Qt: where its output and input copy go, whether an output can
be resumed, and whether another run holds it.

The napari widget runs the CLI's command (``run_control``); these functions decide what that
command is given. An in-memory affinities layer is first copied to a zarr array inside the
output container (``<container>/.napari_input/<dataset>``) together with a hash of its content,
so a rerun on unchanged data reuses the copy and can resume.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from ..attributes import COMPLETE_ATTR
from ..errors import OutputInUseError
from ..parameters import WatershedParameters
from ..storage.paths import update_attributes, zarr_node
from .block_shape import DEFAULT_BLOCK_SIZE
from .lock import RunLock, lock_path

#: Name of the output array when the user does not choose one.
DEFAULT_OUTPUT_NAME = "labels_mws"
#: Where copies of in-memory affinities go, inside the output container.
INPUT_COPY_DIR = ".napari_input"
#: Attribute of such a copy: hash of the layer data it was made from.
CONTENT_ATTR = "napari_content_hash"
#: Arrays over the affinities' voxel grid a run may take (``--mask``, ``--seeds``).
GUIDE_ROLES = ("mask", "seeds")
#: Output folder of runs on in-memory data (default: the user data directory).
DATA_DIR_ENV = "NAPARI_MUTEX_WATERSHED_DATA_DIR"


def data_dir() -> Path:
    """Folder for the output of runs on in-memory layers."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override)
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-mutex-watershed", appauthor=False))


def safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._")
    return cleaned or "layer"


def input_copy_path(output: Path) -> Path:
    from ..storage import split_path

    container, dataset = split_path(output, DEFAULT_OUTPUT_NAME)
    return container / INPUT_COPY_DIR / dataset


def guide_copy_path(output: Path, role: str) -> Path:
    """Where a mask or seeds layer is copied for the job: beside the affinities' copy."""
    path = input_copy_path(output)
    return path.with_name(f"{path.name}_{role}")


def parse_block_size(text: str, ndim: int) -> tuple[int, ...] | None:
    """'64, 64, 64', '64' (every axis) or '' (None: chosen from the region,
    ``block_shape.block_size_for``) as a block shape; a ValueError says what to type instead."""
    cleaned = text.strip().strip("[]()")
    if not cleaned:
        return None
    try:
        values = tuple(int(v) for v in re.split(r"[,;\s]+", cleaned) if v)
    except ValueError:
        raise ValueError(f"Block size: cannot read {text!r}") from None
    if len(values) == 1:
        values = values * ndim
    if len(values) != ndim or any(v < 1 for v in values):
        raise ValueError(f"Block size: give {ndim} positive integers, e.g. "
                         f"{', '.join(map(str, DEFAULT_BLOCK_SIZE[ndim]))}")
    return values


def content_hash(data, offsets, voxel_size, offset) -> str:
    """Hash of the layer data and what is written with it (runs off the main thread).
    ``data``: affinities (channels first) or a mask or seeds (spatial axes only), read a
    slab of the first spatial axis at a time."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((tuple(data.shape), str(np.dtype(data.dtype)), [list(o) for o in offsets],
                        list(voxel_size), list(offset))).encode())
    lead = (slice(None),) * (data.ndim - len(voxel_size))  # the channel axis, if any
    plane = int(np.prod(data.shape)) // max(1, int(data.shape[len(lead)]))
    step = max(1, 2**24 // max(1, plane))
    for start in range(0, int(data.shape[len(lead)]), step):
        slab = np.ascontiguousarray(np.asarray(data[lead + (slice(start, start + step),)]))
        digest.update(memoryview(slab).cast("B"))
    return digest.hexdigest()


def stored_hash(path: Path) -> str | None:
    return zarr_node(path)[1].get(CONTENT_ATTR)


def write_input_copy(path: Path, data, offsets, voxel_size, offset, token: str) -> Path:
    """Write in-memory affinities for the job (storage.write_affinities), tagged with a hash."""
    from ..storage import write_affinities

    written = write_affinities(path, np.asarray(data), offsets, voxel_size=voxel_size,
                               offset=offset, overwrite=True)
    update_attributes(written, {CONTENT_ATTR: token})
    return written


def write_guide_copy(path: Path, data, voxel_size, offset, token: str) -> Path:
    """Write a mask or seeds layer for the job (on the affinities' voxel grid), tagged with
    a hash of its content like the affinities' copy."""
    from ..storage import write_labels

    write_labels(path, data, voxel_size=voxel_size, offset=offset, overwrite=True,
                 attributes={CONTENT_ATTR: token})
    return path


# ---------------------------------------------------------------------------- outputs
def output_state(input_path: Path, output: Path, parameters: WatershedParameters,
                 block_size: tuple[int, ...], shape: tuple[int, ...],
                 guides: dict[str, Path] | None = None) -> str:
    """What is at ``output``: 'absent', 'resumable' (an unfinished run of this same job),
    'finished' (this same job, complete) or 'other' (anything else: needs --overwrite). An
    earlier run's output that holds nothing computed counts as 'absent': the run replaces it
    (``launch.holds_work``). ``guides``: the job's mask and seeds arrays by role
    (``GUIDE_ROLES``)."""
    from ..storage import DEFAULT_OUTPUT, array_path, output_format, stored_attributes
    from .launch import holds_work, work_dir_for
    from .plan import PLAN_FILE, BlockwisePlan

    location = array_path(output, DEFAULT_OUTPUT)
    if not location.exists():
        return "absent"
    plan_file = work_dir_for(output) / PLAN_FILE
    try:
        previous = BlockwisePlan.load(plan_file).identity()
        expected = BlockwisePlan(
            input_path=str(Path(input_path).resolve()),
            output_path=str(location.resolve() / "0"),  # level 0 of the OME-Zarr labels
            zarr_format=output_format(location),
            work_dir=str(plan_file.parent.resolve()),
            parameters=parameters,
            roi_offset=(0,) * len(shape),
            shape=tuple(shape),
            block_size=tuple(min(b, s) for b, s in zip(block_size, shape)),
            **{f"{role}_path": str(Path(path).resolve()) for role, path in (guides or {}).items()},
        )
        complete = stored_attributes(location).get(COMPLETE_ATTR)
    except Exception:
        return "other"
    if previous != expected.identity():
        return "other" if holds_work(expected) else "absent"
    return "finished" if complete else "resumable"


def output_in_use(output: Path) -> str | None:
    """The CLI's own refusal when another run holds ``output``'s lock (``blockwise.lock``),
    e.g. '<output> is in use by pid N (...)'; None when it is free.

    Asked before any dialog and before the input copy is written, so a running job's state
    and input are never touched. Only an existing lock file is probed (taken and released
    at once): nothing is created for an output that was never run.
    """
    from .launch import work_dir_for

    try:
        work_dir = work_dir_for(output)
        if not lock_path(work_dir).exists():
            return None
        with RunLock(work_dir, output):
            return None
    except OutputInUseError as error:
        return str(error)
    except Exception:  # cannot be probed: the job itself says what is wrong
        return None
