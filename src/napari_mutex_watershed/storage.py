"""Zarr input and output through funlib.persistence: affinities in, labels out.

Paths name an array inside a container, ``volume.zarr/affinities``. A bare container path
(``volume.zarr``) means its ``affinities`` array for input and ``labels`` for output.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array, open_ds, prepare_ds

from .attributes import PARAMETERS_ATTR
from .errors import InvalidInputError, OutputExistsError
from .parameters import WatershedParameters

CONTAINER_SUFFIXES = (".zarr", ".n5", ".zarr/", ".n5/")
DEFAULT_INPUT = "affinities"
DEFAULT_OUTPUT = "labels"


def split_path(path: str | Path, default_dataset: str) -> tuple[Path, str]:
    """(container, dataset) of an array path such as ``a.zarr/seg/labels``."""
    parts = Path(path).parts
    for i, part in enumerate(parts):
        if part.endswith((".zarr", ".n5")):
            container = Path(*parts[: i + 1])
            dataset = "/".join(parts[i + 1 :]) or default_dataset
            return container, dataset
    raise InvalidInputError(f"{path} is not inside a .zarr or .n5 container")


def array_path(path: str | Path, default_dataset: str) -> Path:
    container, dataset = split_path(path, default_dataset)
    return container / dataset


@dataclass
class Affinities:
    """An opened affinities array and what is known about it."""

    array: Array
    path: Path
    offsets: list[tuple[int, ...]] | None

    @property
    def spatial_roi(self) -> Roi:
        return self.array.roi

    @property
    def voxel_size(self) -> Coordinate:
        return self.array.voxel_size

    @property
    def num_channels(self) -> int:
        return int(self.array.shape[0])


def open_affinities(path: str | Path) -> Affinities:
    """Open affinities lazily; offsets come from the ``offsets`` attribute when present."""
    location = array_path(path, DEFAULT_INPUT)
    if not location.exists():
        raise InvalidInputError(f"no affinities at {location}: the path does not exist")
    try:
        array = open_ds(str(location), mode="r")
    except Exception as error:  # funlib/zarr raise many types for unreadable stores
        raise InvalidInputError(f"cannot open {location} as a zarr array: {error}") from None
    if len(array.shape) not in (3, 4) or array.channel_dims != 1:
        raise InvalidInputError(
            f"{location} has shape {tuple(array.shape)} with axes {array.axis_names}: "
            "expected (c^, [z,] y, x) affinities with one channel axis first"
        )
    offsets = array.attrs.get("offsets")
    offsets = [tuple(int(v) for v in o) for o in offsets] if offsets else None
    return Affinities(array=array, path=location, offsets=offsets)


def parameters_for(affinities: Affinities, parameters: WatershedParameters) -> WatershedParameters:
    """The parameters with offsets taken from the array when the array names them."""
    if affinities.offsets is None or "offsets" in parameters.model_fields_set:
        return parameters
    return parameters.model_copy(update={"offsets": affinities.offsets})


def create_array(
    path: str | Path,
    default_dataset: str,
    shape: tuple[int, ...],
    dtype,
    axis_names: list[str],
    voxel_size=None,
    offset=None,
    units=None,
    chunk_shape=None,
    attributes: dict | None = None,
    overwrite: bool = False,
) -> Array:
    """Create a zarr array with funlib metadata in a container with a root group."""
    location = array_path(path, default_dataset)
    if location.exists():
        if not overwrite:
            raise OutputExistsError(f"{location} already exists; pass --overwrite to replace it")
        shutil.rmtree(location)
    ndim = sum(not a.endswith("^") for a in axis_names)
    container, dataset = split_path(path, default_dataset)
    # groups all the way down, so other readers can walk the container to the array
    root = zarr.open_group(str(container), mode="a")
    parent = "/".join(dataset.split("/")[:-1])
    if parent:
        root.require_group(parent)
    return prepare_ds(
        str(location),
        shape=tuple(shape),
        offset=Coordinate(offset if offset is not None else (0,) * ndim),
        voxel_size=Coordinate(voxel_size if voxel_size is not None else (1,) * ndim),
        axis_names=axis_names,
        units=list(units) if units is not None else [""] * ndim,
        chunk_shape=chunk_shape or tuple(min(64, s) for s in shape),
        dtype=dtype,
        mode="w",
        custom_metadata=attributes or {},
    )


def prepare_labels(
    path: str | Path,
    like: Affinities,
    chunk_shape: tuple[int, ...] | None,
    overwrite: bool,
    attributes: dict,
    dtype=np.uint32,
    roi_offset: tuple[int, ...] | None = None,
    shape: tuple[int, ...] | None = None,
) -> Array:
    """Create the output labels array with the input's geometry (or a voxel sub-box of it)."""
    source = like.array
    spatial_shape = tuple(source.shape[1:])
    roi_offset = roi_offset or (0,) * len(spatial_shape)
    voxel_size = source.voxel_size
    return create_array(
        path,
        DEFAULT_OUTPUT,
        shape=shape or spatial_shape,
        dtype=dtype,
        axis_names=[a for a in source.axis_names if not a.endswith("^")],
        voxel_size=voxel_size,
        offset=source.roi.offset + Coordinate(roi_offset) * voxel_size,
        units=source.units,
        chunk_shape=chunk_shape,
        attributes=attributes,
        overwrite=overwrite,
    )


def affinity_chunks(spatial_shape) -> tuple[int, ...]:
    """Chunks half the default block size: a block read with its halo then decodes about 4x
    the voxels it needs, against 15x with chunks as large as the block (see docs/blockwise.md)."""
    edge = 32 if len(spatial_shape) == 3 else 256
    return tuple(min(edge, s) for s in spatial_shape)


def write_affinities(
    path: str | Path, affinities: np.ndarray, offsets, voxel_size=None, offset=None,
    overwrite: bool = False,
) -> Path:
    """Write in-memory affinities as a zarr array the engine and napari can read back."""
    ndim = affinities.ndim - 1
    array = create_array(
        path,
        DEFAULT_INPUT,
        shape=affinities.shape,
        dtype=affinities.dtype,
        axis_names=["c^"] + ["z", "y", "x"][-ndim:],
        voxel_size=voxel_size,
        offset=offset,
        chunk_shape=(affinities.shape[0],) + affinity_chunks(affinities.shape[1:]),
        attributes={"offsets": [list(map(int, o)) for o in offsets]},
        overwrite=overwrite,
    )
    array[array.roi] = affinities
    return array_path(path, DEFAULT_INPUT)


def write_labels(
    path: str | Path, labels: np.ndarray, voxel_size=None, offset=None,
    overwrite: bool = False, attributes: dict | None = None,
) -> Path:
    """Write an in-memory labels volume (ground truth, exports) with funlib metadata."""
    array = create_array(
        path,
        DEFAULT_OUTPUT,
        shape=labels.shape,
        dtype=labels.dtype,
        axis_names=["z", "y", "x"][-labels.ndim:],
        voxel_size=voxel_size,
        offset=offset,
        attributes=attributes,
        overwrite=overwrite,
    )
    array[array.roi] = labels
    return array_path(path, DEFAULT_OUTPUT)


def stored_parameters(array: Array) -> WatershedParameters | None:
    """The parameters a labels array was made with (provenance), if it says."""
    stored = array.attrs.get(PARAMETERS_ATTR)
    if not stored:
        return None
    return WatershedParameters.model_validate(json.loads(stored) if isinstance(stored, str) else stored)
