"""Opening inputs: every supported layout becomes a lazy array with its geometry.

zarr v2/v3 arrays (funlib ``voxel_size``/``offset``/``axis_names``, DaCapo/daisy
``resolution``/``offset``, zarr v3 ``dimension_names`` or nothing), OME-Zarr 0.4/0.5 images
(the group means level 0, a level's path works too), N5 datasets (through tensorstore) and
HDF5 datasets (through h5py). What had to be assumed is said in one line (``Volume.note``).

funlib.persistence (with dask, xarray and pandas: about 0.5 s to import) is loaded only when
a funlib ``Array`` is asked for: the command line's checks and the blockwise job need none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from funlib.geometry import Coordinate, Roi

from ..errors import InvalidInputError
from ..regions import whole_numbers
from .blocks import TensorStoreArray, hdf5_dataset
from .paths import (
    ACCEPTED,
    DEFAULT_INPUT,
    arrays_in,
    container_kind,
    level_paths,
    multiscales,
    read_json,
    split_path,
    zarr_node,
)

if TYPE_CHECKING:
    from funlib.persistence import Array

logger = logging.getLogger("napari_mutex_watershed.storage")
#: The (path, note) pairs already said in this process: a widget opens its input again for
#: each preview, run and sweep, and the line is the same each time.
_SAID: set[tuple[str, str]] = set()


def say_note(path, note: str | None) -> None:
    """Log what had to be assumed about the array at ``path``, once per process."""
    if note and (str(path), note) not in _SAID:
        _SAID.add((str(path), note))
        logger.warning("%s: %s", path, note)


SPATIAL_NAMES = ("z", "y", "x")
CHANNEL_NAMES = ("c", "ch", "channel", "channels")
#: OME/UDUNITS length units and their size in picometres (whole numbers, so conversions
#: between them are exact), to turn fractional scales into the integer voxel sizes funlib's
#: geometry needs, and back.
PICOMETRES = {"picometer": 1, "pm": 1, "angstrom": 100, "nanometer": 1000, "nm": 1000,
              "micrometer": 10**6, "um": 10**6, "µm": 10**6, "micron": 10**6,
              "millimeter": 10**9, "mm": 10**9}


@dataclass(frozen=True)
class FileGeometry:
    """The geometry as the file states it, where a ``Volume``'s whole numbers differ from it
    (fractions converted to nm or pm, or unit voxels at the origin where no whole numbers
    could be made): per axis, a position ``p`` of the volume is ``factor * p + shift`` in the
    file's ``units``, a size ``s`` is ``factor * s``. Layers and the output's OME scales use
    it, so that they overlay what other readers open from the same file."""

    factor: tuple[Fraction | float, ...]  # a unit conversion is an exact ratio
    shift: tuple[float, ...]
    units: tuple[str, ...]

    def sizes(self, values) -> tuple[float, ...]:
        return self.positions(values, (0.0,) * len(self.shift))

    def positions(self, values, shift=None) -> tuple[float, ...]:
        """Exact arithmetic, one rounding: 162500 pm is 0.1625 um, not 0.16249999999999998."""
        return tuple(float(Fraction(f) * Fraction(float(v)) + Fraction(float(s)))
                     for f, v, s in zip(self.factor, values, shift or self.shift))


@dataclass
class Volume:
    """An opened array (level 0 of a pyramid) with its geometry in world units."""

    path: Path
    data: Any  # numpy-style indexing in voxels: zarr.Array, h5py.Dataset, TensorStoreArray
    axis_names: list[str]  # funlib style: non-spatial axes end with "^"
    voxel_size: tuple[int, ...]
    offset: tuple[int, ...]
    units: list[str]
    attrs: dict
    kind: str  # "zarr", "ome-zarr", "n5" or "hdf5"
    levels: list = field(default_factory=list)  # every level of a pyramid, level 0 first
    note: str | None = None
    #: The geometry as the file states it, where it is not ``voxel_size``/``offset``/
    #: ``units`` themselves.
    stored: FileGeometry | None = None

    def file_geometry(self) -> FileGeometry:
        """How this volume's world values read in the file's own terms."""
        n = len(self.voxel_size)
        return self.stored or FileGeometry((1.0,) * n, (0.0,) * n, tuple(self.units))

    @property
    def channel_dims(self) -> int:
        return sum(a.endswith("^") for a in self.axis_names)

    def funlib(self) -> Array:
        """A funlib Array (world-unit Roi reads) over the same data, attributes included."""
        import zarr
        from funlib.persistence import Array

        chunks = getattr(self.data, "chunks", None)
        types = ["channel" if a.endswith("^") else "space" for a in self.axis_names]
        array = Array(self.data, self.offset, self.voxel_size, self.axis_names, self.units,
                      types, chunks=tuple(chunks) if chunks else "auto")
        if not isinstance(self.data, zarr.Array):  # zarr's attrs are the store's own
            array.attrs.update(self.attrs)
        return array

    def dask_levels(self, name: str | None = None) -> list:
        """Every level as a dask array (chunked like the store), level 0 first."""
        import dask.array as da

        out = []
        for i, level in enumerate(self.levels or [self.data]):
            chunks = getattr(level, "chunks", None) or "auto"
            out.append(da.from_array(level, chunks=chunks, name=f"{name}-{i}" if name else None))
        return out


@dataclass
class Affinities:
    """An opened affinities array and what is known about it; its geometry comes from the
    ``volume``, the funlib ``array`` is made on first use."""

    volume: Volume
    offsets: list[tuple[int, ...]] | None
    #: What is wrong with an ``offsets`` attribute that is there but unreadable (``offsets``
    #: is then None): said only when no offsets are given instead (``parameters_for``).
    offsets_problem: str | None = None

    @property
    def path(self) -> Path:
        return self.volume.path

    @property
    def note(self) -> str | None:
        return self.volume.note

    @cached_property
    def array(self) -> Array:
        return self.volume.funlib()

    @property
    def shape(self) -> tuple[int, ...]:
        """Channels first, then the spatial axes."""
        return tuple(int(s) for s in self.volume.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.volume.data.dtype)

    @property
    def spatial_roi(self) -> Roi:
        return Roi(self.volume.offset, self.voxel_size * Coordinate(self.shape[1:]))

    @property
    def voxel_size(self) -> Coordinate:
        return Coordinate(self.volume.voxel_size)

    @property
    def num_channels(self) -> int:
        return self.shape[0]


# ---------------------------------------------------------------------------- readers
def _plain(value):
    """HDF5/N5 attribute values as JSON-like Python values."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------------------- geometry
def _world_geometry(scale, translation, units):
    """Integer voxel size and offset for funlib, their units and the file's geometry (None
    unless converted, ``FileGeometry``): as stored when integral, else converted to
    nanometres when the unit is a length, or to picometres where nanometres are fractions
    (light microscopy's 0.1625 um is 162.5 nm, 162500 pm), else None."""
    voxel_size, offset = whole_numbers(scale), whole_numbers(translation)
    if voxel_size and offset is not None and all(v > 0 for v in voxel_size):
        return voxel_size, offset, list(units), None
    if units and all(u in PICOMETRES for u in units):
        for unit in ("nanometer", "picometer"):
            factors = [PICOMETRES[u] / PICOMETRES[unit] for u in units]
            voxel_size = whole_numbers([s * f for s, f in zip(scale, factors)])
            offset = whole_numbers([t * f for t, f in zip(translation, factors)])
            if voxel_size and offset is not None and all(v > 0 for v in voxel_size):
                # one unit on every axis: shown in it (napari does not convert between
                # units, so mixed ones stay in the common one, whose proportions are right)
                stored = FileGeometry(tuple(Fraction(PICOMETRES[unit], PICOMETRES[u])
                                            for u in units),
                                      (0.0,) * len(units), tuple(units)) if len(
                    set(units)) == 1 else None
                return voxel_size, offset, [unit] * len(units), stored
    return None


def _axis_roles(ndim: int, names, n_spatial: int | None):
    """funlib-style axis names: channel axes (named c, or ending with ^) get a "^"."""
    if names is not None and len(names) == ndim:
        return [n if n.endswith("^") else (f"{n}^" if n in CHANNEL_NAMES else n)
                for n in map(str, names)]
    n_spatial = ndim if n_spatial is None else n_spatial
    channels = ["c^"] if ndim - n_spatial == 1 else [f"c{i}^" for i in range(ndim - n_spatial)]
    spatial = list(SPATIAL_NAMES[-n_spatial:]) if n_spatial <= 3 else [
        f"d{i}" for i in range(n_spatial)]
    return channels + spatial


def _stored_numbers(location: Path, attrs: dict, *keys: str) -> list | None:
    """The first of ``keys`` the attributes hold, a list of numbers; one line if it is not."""
    for key in keys:
        value = attrs.get(key)
        if value is None or (isinstance(value, list | tuple) and not value):
            continue
        if not isinstance(value, list | tuple) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise InvalidInputError(f"{location}: its {key} attribute {value!r} is not a list "
                                    "of numbers; fix its metadata")
        return list(value)
    return None


def _from_attributes(location: Path, shape, attrs: dict, reverse: bool, role: str,
                     dimension_names=None):
    """Geometry from funlib (voxel_size, offset, axis_names, units) or DaCapo/daisy
    (resolution, offset) attributes; N5 stores them fastest axis first (``reverse``).
    Fractions of a length unit become whole nanometres or picometres, as for OME-Zarr;
    other fractions are refused (funlib would truncate 4.5 to 4)."""
    flip = (lambda v: list(v)[::-1]) if reverse else (lambda v: list(v))
    voxel_size = _stored_numbers(location, attrs, "voxel_size", "resolution")
    offset = _stored_numbers(location, attrs, "offset")
    names = attrs.get("axis_names")
    if names is None and dimension_names and all(dimension_names):
        names = list(dimension_names)
    units = attrs.get("units")
    ndim = len(shape)
    note = None
    voxel_size = flip(voxel_size) if voxel_size else None
    offset = flip(offset) if offset else None
    names = flip(names) if names else None
    units = flip(units) if units else None
    if names is not None and len(names) == ndim:
        n_spatial = sum(not (str(n).endswith("^") or n in CHANNEL_NAMES) for n in names)
    elif voxel_size or offset:
        n_spatial = len(voxel_size or offset)
    else:
        n_spatial = ndim - 1 if role == "affinities" and ndim > 2 else ndim
    axis_names = _axis_roles(ndim, names, n_spatial)
    if voxel_size is None:
        described = ", ".join(n.rstrip("^") for n in axis_names)
        note = (f"no voxel size stored: assumed axes ({described}), "
                + ("channel first, " if ndim > n_spatial else "")
                + "voxel size 1, offset 0")
    stored = (voxel_size or [1] * n_spatial, offset or [0] * n_spatial)
    units = [str(u) for u in units] if units and len(units) == n_spatial else [""] * n_spatial
    voxel_size, offset = whole_numbers(stored[0]), whole_numbers(stored[1])
    in_file = None
    if voxel_size is None or offset is None:
        world = _world_geometry(*stored, units)
        if world is None:
            raise InvalidInputError(
                f"{location} has voxel size {tuple(stored[0])} and offset {tuple(stored[1])}:"
                " not whole numbers, and " + (f"its units {tuple(units)} are not lengths"
                                              if any(units) else
                                              "it stores no unit for each of its axes")
                + " to convert them to whole nanometres; store whole numbers, or units such as "
                "\"nm\" or \"um\"")
        voxel_size, offset, units, in_file = world
    return axis_names, voxel_size, offset, units, note, in_file


def _ome_geometry(group: Path, attrs: dict, level: int):
    """Axes, voxel size, offset and units of one level of an OME-Zarr image."""
    multiscale = multiscales(attrs)[0]
    axes = multiscale.get("axes") or [{"name": n} for n in SPATIAL_NAMES]
    names = [a["name"] if isinstance(a, dict) else str(a) for a in axes]
    types = [a.get("type") if isinstance(a, dict) else None for a in axes]
    units = [a.get("unit") if isinstance(a, dict) else None for a in axes]
    space = [t == "space" or (t is None and n in SPATIAL_NAMES) for n, t in zip(names, types)]
    scale, translation = np.ones(len(names)), np.zeros(len(names))
    transforms = (multiscale["datasets"][level].get("coordinateTransformations") or [])
    # in order, the dataset's then the multiscale's: a scale after a translation scales it
    for transform in transforms + (multiscale.get("coordinateTransformations") or []):
        if transform.get("type") == "scale":
            factor = np.asarray(transform["scale"], float)
            scale, translation = scale * factor, translation * factor
        elif transform.get("type") == "translation":
            translation = translation + np.asarray(transform["translation"], float)
    spatial = [i for i, s in enumerate(space) if s]
    axis_names = [n if s else f"{n}^" for n, s in zip(names, space)]
    spatial_units = [units[i] or "" for i in spatial]
    world = _world_geometry(scale[spatial], translation[spatial], spatial_units)
    note = None
    if world is None:  # computed in voxels; layers and outputs keep the file's scale
        note = (f"OME scale ({', '.join(f'{v:g}' for v in scale[spatial])}) and translation "
                f"({', '.join(f'{v:g}' for v in translation[spatial])}) are not whole numbers"
                + ("" if all(spatial_units) else " and have no unit")
                + ": computed in voxels (voxel size 1, offset 0)")
        world = ((1,) * len(spatial), (0,) * len(spatial), [""] * len(spatial),  # voxels
                 FileGeometry(tuple(float(v) for v in scale[spatial]),
                              tuple(float(v) for v in translation[spatial]),
                              tuple(spatial_units)))
    voxel_size, offset, spatial_units, stored = world
    return axis_names, voxel_size, offset, spatial_units, note, stored


# ---------------------------------------------------------------------------- opening
def _open_zarr(location: Path, role: str) -> Volume:
    from .chunk_files import open_local_array

    node, attrs = zarr_node(location)
    if node is None:
        if any((location / name).exists() for name in ("zarr.json", ".zarray", ".zgroup")):
            raise InvalidInputError(
                f"cannot open {location} as a zarr array: its metadata is not valid JSON")
        raise InvalidInputError(f"{location} is not a zarr array or group; " + ACCEPTED)
    group_attrs, level, group = None, 0, None
    if node == "group":
        if not multiscales(attrs):
            raise InvalidInputError(
                f"{location} is a zarr group, not an array or an OME-Zarr image; open one of "
                "its arrays (e.g. " + f"{location}/<name>); " + ACCEPTED)
        group, group_attrs = location, attrs
    else:
        parent_node, parent_attrs = zarr_node(location.parent)
        if parent_node == "group" and multiscales(parent_attrs):
            paths = level_paths(parent_attrs)
            if location.name in paths:
                group, group_attrs, level = location.parent, parent_attrs, paths.index(
                    location.name)
    try:
        if group is not None:
            paths = level_paths(group_attrs)
            levels = [open_local_array(group / p) for p in paths]
            data = levels[level]
        else:
            data = open_local_array(location)
            levels = [data]
    except Exception as error:  # zarr raises many types for unreadable stores
        raise InvalidInputError(f"cannot open {location} as a zarr array: {error}") from None
    array_attrs = dict(data.attrs)
    if group is not None:
        axis_names, voxel_size, offset, units, note, stored = _ome_geometry(
            group, group_attrs, level)
        merged = {k: v for k, v in group_attrs.items() if k not in ("ome", "multiscales")}
        merged.update(array_attrs)
        return Volume(group / paths[level], data, axis_names, voxel_size, offset, units,
                      merged, "ome-zarr", levels[level:], note, stored)
    dimension_names = getattr(data.metadata, "dimension_names", None)
    axis_names, voxel_size, offset, units, note, stored = _from_attributes(
        location, data.shape, array_attrs, reverse=False, role=role,
        dimension_names=dimension_names)
    return Volume(location, data, axis_names, voxel_size, offset, units, array_attrs, "zarr",
                  [data], note, stored)


def _open_n5(location: Path, role: str) -> Volume:
    attrs = read_json(location / "attributes.json")
    if "dimensions" not in attrs:
        raise InvalidInputError(f"{location} is not an N5 dataset (no dimensions in its "
                                "attributes.json); " + ACCEPTED)
    try:
        data = TensorStoreArray(location)
    except Exception as error:  # tensorstore raises ValueError with its status
        raise InvalidInputError(f"cannot open {location} as an N5 dataset: {error}") from None
    user = {k: v for k, v in attrs.items()
            if k not in ("dimensions", "blockSize", "dataType", "compression", "n5")}
    geometry = _from_attributes(location, data.shape, user, reverse=True, role=role)
    return Volume(location, data, *geometry[:4], user, "n5", [data], *geometry[4:])


def _open_hdf5(container: Path, dataset: str, role: str) -> Volume:
    try:
        data = hdf5_dataset(container, dataset)
    except OSError as error:
        raise InvalidInputError(f"cannot open {container} as an HDF5 file: {error}") from None
    attrs = {k: _plain(v) for k, v in data.attrs.items()}
    geometry = _from_attributes(container / dataset, data.shape, attrs, reverse=False,
                                role=role)
    return Volume(container / dataset, data, *geometry[:4], attrs, "hdf5", [data],
                  *geometry[4:])


def open_volume(path: str | Path, default_dataset: str = DEFAULT_INPUT,
                role: str = "labels") -> Volume:
    """Open any supported layout lazily. ``role="affinities"`` assumes a channel axis first
    when nothing says which axes are spatial; the role ("mask", "seeds", ...) names what is
    missing."""
    container, dataset = split_path(path, default_dataset)
    location = container / dataset if dataset else container
    what = "array" if role == "labels" else role
    if not location.exists() and container_kind(container) != "hdf5":
        held = ""
        if container.is_dir():
            held = f"; {container} holds " + (", ".join(arrays_in(container)) or "no arrays")
        missing = location if container.exists() else Path(path)  # as given
        raise InvalidInputError(f"no {what} at {missing}: the path does not exist{held}")
    kind = container_kind(container)
    if kind == "hdf5":
        if not container.is_file():
            raise InvalidInputError(f"no {what} at {location}: the path does not exist")
        return _open_hdf5(container, dataset, role)
    if kind == "n5":
        return _open_n5(location, role)
    return _open_zarr(location, role)


def open_affinities(path: str | Path) -> Affinities:
    """Open affinities lazily; offsets come from the ``offsets`` attribute when present.

    When the geometry had to be assumed, one line says so (a logging warning, which the
    command line shows, and ``Affinities.note``)."""
    volume = open_volume(path, DEFAULT_INPUT, role="affinities")
    shape = tuple(volume.data.shape)
    if len(shape) not in (3, 4) or volume.channel_dims != 1 or not volume.axis_names[0].endswith(
            "^"):
        raise InvalidInputError(
            f"{volume.path} has shape {shape} with axes {volume.axis_names}: "
            "expected (c^, [z,] y, x) affinities with one channel axis first"
        )
    say_note(volume.path, volume.note)
    value = volume.attrs.get("offsets")
    if value is None:
        return Affinities(volume, None)
    offsets, problem = stored_offsets(value, volume.path)
    return Affinities(volume, offsets, problem)


def stored_offsets(value, path) -> tuple[list[tuple[int, ...]] | None, str | None]:
    """(the ``offsets`` attribute as integer vectors, None) or (None, one line on what is
    wrong with it): fractions are refused, not truncated."""
    from pydantic import ValidationError

    from ..parameters import WatershedParameters, validation_problems

    try:
        return WatershedParameters(offsets=value).offsets, None
    except (ValidationError, TypeError, ValueError) as error:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        problems = (validation_problems(error).split("; ")
                    if isinstance(error, ValidationError) else [])
        why = "; ".join(problems[:2]) + (f"; and {len(problems) - 2} more"
                                        if len(problems) > 2 else "")
        return None, (f"the offsets attribute of {path} ({shown}) is not a list of integer "
                      f"vectors" + (f": {why}" if why else ""))


def stored_attributes(path: str | Path, default_dataset: str = "labels") -> dict:
    """The attributes of an array or of an OME-Zarr image (its group's, then level 0's),
    without loading data; {} when there is nothing readable there."""
    try:
        return dict(open_volume(path, default_dataset).attrs)
    except Exception:  # absent, half-written or foreign: nothing stored
        return {}


def parameters_for(affinities: Affinities, parameters):
    """``parameters`` (None, a WatershedParameters or a dict of its fields) validated for
    ``affinities``: with the array's own offsets (its ``offsets`` attribute) unless they name
    some; with neither, the defaults of its dimension (3D or 2D), which a line says, since
    the channels may mean other offsets. Selected ``channels`` take those channels' offsets.
    Refused when they do not fit its axes or channels."""
    from ..parameters import (
        WatershedParameters,
        as_parameters,
        check_channels_exist,
        default_offsets,
        named_fields,
        nearest_neighbours,
        offsets_of_channels,
        offsets_text,
    )

    named = named_fields(parameters)
    ndim = len(affinities.shape) - 1
    offsets = None if "offsets" in named else affinities.offsets
    if "offsets" not in named and affinities.offsets_problem:
        raise InvalidInputError(f"{affinities.offsets_problem}; give the offsets instead "
                                "(--offsets, or in the parameters)")
    assumed = "offsets" not in named and offsets is None
    if assumed:
        offsets = default_offsets(ndim)
    chosen = (parameters.channels if isinstance(parameters, WatershedParameters)
              else (parameters or {}).get("channels"))
    if "offsets" not in named:  # one per channel: those of the chosen ones
        offsets = offsets_of_channels(offsets, chosen, affinities.num_channels)
    parameters = as_parameters(parameters, offsets=offsets)
    if parameters.ndim != ndim:
        stored = "" if "offsets" in named else f" (its offsets attribute, {affinities.path})"
        raise InvalidInputError(
            f"the affinities are {ndim}D but the offsets{stored} are {parameters.ndim}D: give "
            f"{ndim}D offsets")
    channels = affinities.num_channels
    if parameters.channels is None and channels != len(parameters.offsets):
        given = (f"stores no offsets, and the {ndim}D defaults are {len(parameters.offsets)}"
                 if assumed else f"there are {len(parameters.offsets)} offsets")
        raise InvalidInputError(
            f"{affinities.path} has {channels} channels but {given}: give one offset per "
            f"channel (e.g. {offsets_text(nearest_neighbours(ndim))} for nearest "
            "neighbours), or select channels")
    check_channels_exist(parameters.channels, channels)
    if assumed:
        say_note(affinities.path, f"no offsets stored: assumed the {ndim}D defaults "
                 f"{offsets_text(parameters.offsets)}")
    return parameters
