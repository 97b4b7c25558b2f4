"""Writing outputs: plain arrays with funlib metadata, and OME-Zarr labels with a pyramid.

Every array is created here, in the container's own zarr format (a zarr v2 container stays
a valid v2 hierarchy: groups with .zgroup all the way down), with funlib's attributes
(``voxel_size``, ``offset``, ``axis_names``, ``units``, ``types``) so
``funlib.persistence.open_ds`` sees its geometry, and ``dimension_names`` (zarr v3) so
tensorstore and neuroglancer see the axis names.

Blockwise results are OME-Zarr labels (``prepare_labels``): 0.5 on zarr v3, 0.4 on zarr v2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zarr

from ..attributes import PARAMETERS_ATTR
from ..errors import InvalidInputError, OutputExistsError
from ..parameters import WatershedParameters
from .inputs import Affinities, FileGeometry
from .levels import labels_level0, list_label
from .paths import (
    DEFAULT_INPUT,
    DEFAULT_OUTPUT,
    LABELS_GROUP,
    array_path,
    container_kind,
    replace_file,
    split_path,
    write_group,
    zarr_node,
)

if TYPE_CHECKING:  # funlib.persistence imports dask, xarray and pandas: only where returned
    from funlib.persistence import Array

#: OME/UDUNITS names of the units funlib users write.
OME_UNITS = {"nm": "nanometer", "um": "micrometer", "µm": "micrometer", "micron": "micrometer",
             "mm": "millimeter", "A": "angstrom", "pm": "picometer"}


# ---------------------------------------------------------------------------- containers
def container_format(container: Path) -> int | None:
    """The zarr format of an existing container (2 or 3), None when there is none yet."""
    container = Path(container)
    if (container / "zarr.json").exists():
        return 3
    if (container / ".zgroup").exists() or (container / ".zarray").exists():
        return 2
    return None


def output_format(path: str | Path, requested: int | None = None,
                  default_dataset: str = DEFAULT_OUTPUT) -> int:
    """The zarr format to write ``path`` in: the container's own, else ``requested``, else
    3. Mixing formats in one container would hide the new array from the other format's
    readers, so a conflict is refused."""
    container, _ = split_path(path, default_dataset)
    if container_kind(container) != "zarr":
        raise InvalidInputError(f"{path}: outputs are written as zarr; use a .zarr path")
    existing = container_format(container)
    if requested is not None and requested not in (2, 3):
        raise InvalidInputError(f"zarr format {requested}: use 2 or 3")
    if existing and requested and existing != requested:
        raise InvalidInputError(
            f"{container} is a zarr v{existing} container: pass --zarr-format {existing} or "
            "write into another container")
    return existing or requested or 3


def _require_groups(container: Path, dataset: str, zarr_format: int) -> None:
    """The root group and every group above ``dataset``, so readers can walk down to it."""
    parts = dataset.split("/")[:-1]
    for depth in range(len(parts) + 1):
        group = container.joinpath(*parts[:depth])
        node, _ = zarr_node(group)
        if node == "array":
            raise InvalidInputError(f"{group} is a zarr array: an output cannot go inside it; "
                                    "write it into a group or another container")
        if node is None:
            if any((group / name).exists() for name in ("zarr.json", ".zgroup", ".zarray")):
                raise InvalidInputError(f"{group}: its zarr metadata is not valid JSON")
            write_group(group, zarr_format)


def _remove(location: Path, overwrite: bool) -> None:
    if location.exists():
        if not overwrite:
            raise OutputExistsError(f"{location} already exists; pass --overwrite to replace it")
        shutil.rmtree(location)


def funlib_attributes(axis_names, voxel_size, offset, units) -> dict:
    return {"axis_names": list(axis_names), "voxel_size": [int(v) for v in voxel_size],
            "offset": [int(o) for o in offset], "units": list(units),
            "types": ["channel" if a.endswith("^") else "space" for a in axis_names]}


#: zarr's metadata of a new array, by zarr format and dtype: zarr takes 0.5 to 1 ms to make
#: it (its codecs, defaults and checks), and arrays of one kind differ only in what
#: ``_metadata_files`` fills in.
_TEMPLATES: dict[tuple[int, str], dict] = {}


def _metadata_files(shape, dtype, chunks, zarr_format: int, attributes: dict,
                    dimension_names) -> dict[str, bytes]:
    """The metadata files zarr writes for a new array (0 fill, '/' chunk keys): zarr's for
    the first array of its kind, made in memory, then that array's with the shape, the
    chunk shape, the attributes and the axis names filled in, all an array has of its own."""
    from zarr.storage import MemoryStore

    key = (zarr_format, np.dtype(dtype).str)
    if key not in _TEMPLATES:
        made = {}
        zarr.create_array(
            store=MemoryStore(made), shape=(1,), dtype=dtype, chunks=(1,), fill_value=0,
            zarr_format=zarr_format,
            chunk_key_encoding={"name": "v2", "separator": "/"} if zarr_format == 2 else None)
        _TEMPLATES[key] = {name: json.loads(data.to_bytes()) for name, data in made.items()}
    template = _TEMPLATES[key]
    if zarr_format == 3:
        files = {"zarr.json": {**template["zarr.json"], "shape": shape, "chunk_grid": {
            "name": "regular", "configuration": {"chunk_shape": chunks}},
            "attributes": attributes, "dimension_names": dimension_names}}
    else:
        files = {".zarray": {**template[".zarray"], "shape": shape, "chunks": chunks},
                 ".zattrs": attributes}
    return {name: json.dumps(value).encode() for name, value in files.items()}


def _create(location: Path, shape, dtype, chunks, zarr_format: int, attributes: dict,
            axis_names) -> None:
    """One zarr array at a new ``location``: chunks as given, 0 fill, '/' chunk keys
    (OME-Zarr 0.4 wants them), its metadata files as zarr would write them
    (``_metadata_files``) written here: zarr on disk takes 1 to 2.5 ms an array (its event
    loop thread, a worker thread for each file, the folder made, removed and made again)."""
    location.mkdir(parents=True, exist_ok=True)
    for name, data in _metadata_files(
            [int(s) for s in shape], dtype, [int(c) for c in chunks], zarr_format, attributes,
            [a.rstrip("^") for a in axis_names] if zarr_format == 3 else None).items():
        replace_file(location / name, data)


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
    zarr_format: int | None = None,
) -> Array:
    """Create a zarr array with funlib metadata in a container with a root group."""
    from funlib.persistence import open_ds

    location = array_path(path, default_dataset)
    container, dataset = split_path(path, default_dataset)
    zarr_format = output_format(path, zarr_format, default_dataset)
    _remove(location, overwrite)
    ndim = sum(not a.endswith("^") for a in axis_names)
    _require_groups(container, dataset, zarr_format)
    metadata = funlib_attributes(
        axis_names, voxel_size if voxel_size is not None else (1,) * ndim,
        offset if offset is not None else (0,) * ndim,
        list(units) if units is not None else [""] * ndim)
    _create(location, shape, dtype, chunk_shape or tuple(min(64, s) for s in shape),
            zarr_format, {**metadata, **(attributes or {})}, axis_names)
    return open_ds(str(location), mode="r+")


# ---------------------------------------------------------------------------- pyramid
def pyramid_factors(shape, voxel_size, chunks) -> list[tuple[int, ...]]:
    """Downsampling factors of every level relative to level 0, level 0 ((1, ...)) first.

    Each level halves the axes whose voxels are finest (those under twice the smallest
    voxel size, and longer than one voxel), so anisotropic volumes become isotropic-ish
    first; levels stop once one fits in a single chunk."""
    factors = [tuple(1 for _ in shape)]
    while True:
        current = factors[-1]
        level_shape = [-(-s // f) for s, f in zip(shape, current)]
        if all(s <= c for s, c in zip(level_shape, chunks)):
            return factors
        sizes = [v * f for v, f in zip(voxel_size, current)]
        smallest = min(size for size, s in zip(sizes, level_shape) if s > 1)
        step = tuple(2 if s > 1 and size < 2 * smallest else 1
                     for size, s in zip(sizes, level_shape))
        factors.append(tuple(f * k for f, k in zip(current, step)))


def level_shape(shape, factor) -> tuple[int, ...]:
    return tuple(-(-int(s) // int(f)) for s, f in zip(shape, factor))


def _ome_unit(unit: str) -> str | None:
    unit = OME_UNITS.get(unit, unit)
    return unit or None


def ome_metadata(name: str, axis_names, voxel_size, offset, units, factors, zarr_format: int,
                 source_image: str | None = None, stored: FileGeometry | None = None) -> dict:
    """The group attributes of OME-Zarr labels: multiscales (0.5 under "ome" on zarr v3, 0.4
    on v2) and image-label. A level's voxel is the window of level 0 voxels it summarises,
    so its translation is the window's centre. ``stored``: the input file's own terms, to
    state the scales in (``Volume.stored``)."""
    version = "0.5" if zarr_format == 3 else "0.4"
    n = len(voxel_size)
    stored = stored or FileGeometry((1.0,) * n, (0.0,) * n, tuple(units))
    axes = []
    for axis, unit in zip(axis_names, stored.units):
        entry = {"name": axis, "type": "space"}
        if _ome_unit(unit):
            entry["unit"] = _ome_unit(unit)
        axes.append(entry)
    datasets = []
    for i, factor in enumerate(factors):
        scale = stored.sizes([v * f for v, f in zip(voxel_size, factor)])
        translation = stored.positions([o + v * (f - 1) / 2 for o, v, f in
                                        zip(offset, voxel_size, factor)])
        datasets.append({"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": scale},
            {"type": "translation", "translation": translation}]})
    multiscale = {"name": name, "axes": axes, "datasets": datasets, "type": "mode"}
    label = {"version": version}
    if source_image:
        label["source"] = {"image": source_image}
    if zarr_format == 2:
        multiscale["version"] = version
        return {"multiscales": [multiscale], "image-label": label}
    return {"ome": {"version": version, "multiscales": [multiscale], "image-label": label}}


def create_labels_image(path: str | Path, shape, dtype, axis_names, voxel_size, offset, units,
                        chunk_shape, attributes: dict, overwrite: bool,
                        zarr_format: int | None = None,
                        stored: FileGeometry | None = None) -> Path:
    """An OME-Zarr labels image: a group with every pyramid level created (level 0 to be
    written blockwise, the others by the pyramid step). Provenance ``attributes`` go on the
    group (OME readers, napari) and on level 0 (funlib, the blockwise job). Level 0's funlib
    geometry is whole ``units``; the OME scales are in the input file's own terms,
    ``stored`` (fractional micrometres: OME readers then overlay the labels on the input)."""
    location = array_path(path, DEFAULT_OUTPUT)
    container, dataset = split_path(path, DEFAULT_OUTPUT)
    zarr_format = output_format(path, zarr_format)
    _remove(location, overwrite)
    list_label(location, False)  # listed again once complete (``mark_complete``)
    if dataset:
        _require_groups(container, dataset, zarr_format)
    chunk_shape = tuple(min(int(c), int(s)) for c, s in zip(chunk_shape, shape))
    factors = pyramid_factors(shape, voxel_size, chunk_shape)
    parent = dataset.rsplit("/", 1)[0] if "/" in dataset else ""
    in_labels_group = parent.split("/")[-1] == LABELS_GROUP
    metadata = ome_metadata(location.name, axis_names, voxel_size, offset, units, factors,
                            zarr_format, "../../" if in_labels_group else None, stored)
    write_group(location, zarr_format, {**metadata, **attributes})
    for i, factor in enumerate(factors):
        level = level_shape(shape, factor)
        spacing = [v * f for v, f in zip(voxel_size, factor)]
        geometry = funlib_attributes(axis_names, spacing, offset, units)
        _create(location / str(i), level, dtype,
                tuple(min(c, s) for c, s in zip(chunk_shape, level)), zarr_format,
                {**geometry, **(attributes if i == 0 else {})}, axis_names)
    return location  # listed in an image's labels group once complete (``mark_complete``)


# ---------------------------------------------------------------------------- outputs
def prepare_labels(
    path: str | Path,
    like: Affinities,
    chunk_shape: tuple[int, ...] | None,
    overwrite: bool,
    attributes: dict,
    dtype=np.uint32,
    roi_offset: tuple[int, ...] | None = None,
    shape: tuple[int, ...] | None = None,
    zarr_format: int | None = None,
) -> Path:
    """Create the output OME-Zarr labels with the input's geometry (or a voxel sub-box of
    it); return the path of level 0, which the blockwise workers write."""
    source = like.volume
    spatial_shape = like.shape[1:]
    roi_offset = roi_offset or (0,) * len(spatial_shape)
    shape = tuple(shape or spatial_shape)
    location = create_labels_image(
        path, shape, dtype, [a for a in source.axis_names if not a.endswith("^")],
        tuple(source.voxel_size),
        tuple(o + r * v for o, r, v in zip(source.offset, roi_offset, source.voxel_size)),
        list(source.units), chunk_shape or tuple(min(64, s) for s in shape), attributes,
        overwrite, zarr_format, source.stored)
    return labels_level0(location)


def affinity_chunks(spatial_shape) -> tuple[int, ...]:
    """Chunks half the default block size: a block read with its halo then decodes about 4x
    the voxels it needs, against 15x with chunks as large as the block (see docs/blockwise.md)."""
    edge = 32 if len(spatial_shape) == 3 else 256
    return tuple(min(edge, s) for s in spatial_shape)


def write_affinities(
    path: str | Path, affinities: np.ndarray, offsets, voxel_size=None, offset=None,
    overwrite: bool = False, units=None,
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
        units=units,
        chunk_shape=(affinities.shape[0],) + affinity_chunks(affinities.shape[1:]),
        attributes={"offsets": [list(map(int, o)) for o in offsets]},
        overwrite=overwrite,
    )
    array[array.roi] = affinities
    return array_path(path, DEFAULT_INPUT)


def write_labels(
    path: str | Path, labels, voxel_size=None, offset=None,
    overwrite: bool = False, attributes: dict | None = None, axis_names=None,
    chunk_shape=None, slab_bytes: int = 64 * 2**20,
) -> Path:
    """Write a labels volume (ground truth, exports) as one array with funlib metadata;
    lazy (dask) data are written a slab at a time."""
    ndim = len(labels.shape)
    create_array(
        path,
        DEFAULT_OUTPUT,
        shape=tuple(labels.shape),
        dtype=labels.dtype,
        axis_names=list(axis_names or ["z", "y", "x"][-ndim:]),
        voxel_size=voxel_size,
        offset=offset,
        chunk_shape=chunk_shape,
        attributes=attributes,
        overwrite=overwrite,
    )
    store = zarr.open_array(str(array_path(path, DEFAULT_OUTPUT)), mode="r+")
    plane = int(np.prod(labels.shape[1:])) * np.dtype(labels.dtype).itemsize or 1
    step = max(1, slab_bytes // plane)
    for start in range(0, int(labels.shape[0]) if ndim else 1, step):
        index = (slice(start, start + step),) if ndim else ()
        store[index] = np.asarray(labels[index])
    return array_path(path, DEFAULT_OUTPUT)


def stored_parameters(array) -> WatershedParameters | None:
    """The parameters a labels array was made with (provenance), if it says; ``array`` is a
    funlib Array, a zarr node or an attributes dict."""
    attrs = array if isinstance(array, dict) else array.attrs
    stored = attrs.get(PARAMETERS_ATTR)
    if not stored:
        return None
    return WatershedParameters.model_validate(
        json.loads(stored) if isinstance(stored, str) else stored)
