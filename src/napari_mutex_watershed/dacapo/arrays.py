"""``LocalArrayIdentifier`` and ``ZarrArray``: DaCapo's names for a zarr array on disk.

Both are thin: the identifier is a (container, dataset) pair, and the array wraps a
``funlib.persistence.Array`` (world-unit ``Roi`` indexing) plus the raw zarr array, opened
through ``storage`` like every other input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array

from ..errors import InvalidInputError, OutputExistsError, UnsafeOutputError, UsageError
from ..storage import create_array, open_volume
from ..storage.paths import split_path, zarr_node

try:  # DaCapo uses universal_pathlib; a plain local path does the same job here
    from upath import UPath as ContainerPath
except ImportError:  # pragma: no cover - depends on the environment
    ContainerPath = Path

#: Creating a chunk of about this many bytes when no write size is given (as DaCapo does).
DEFAULT_CHUNK_BYTES = 5 * 1024**2
#: Units written for the spatial axes of arrays created here (DaCapo works in nm).
DEFAULT_UNIT = "nm"


def is_channel_axis(name: str) -> bool:
    """DaCapo names its channel axis "c"; funlib marks non-spatial axes with a trailing "^"."""
    return name == "c" or name.endswith("^")


@dataclass(frozen=True)
class LocalArrayIdentifier:
    """A dataset inside a local zarr container.

    >>> identifier = LocalArrayIdentifier("run.zarr", "validation/0/prediction")
    >>> str(identifier)
    'run.zarr/validation/0/prediction'
    >>> identifier.container.name
    'run.zarr'
    """

    container: Path
    dataset: str

    def __post_init__(self):
        object.__setattr__(self, "container", ContainerPath(self.container))
        object.__setattr__(self, "dataset", str(self.dataset))

    def __str__(self) -> str:
        return f"{self.container}/{self.dataset}"

    @property
    def path(self) -> Path:
        """Where the array lives on disk: ``container / dataset``."""
        return Path(self.container) / self.dataset

    @classmethod
    def of(cls, value, role: str) -> LocalArrayIdentifier:
        """``value`` as an identifier: one already, or a path such as ``"run.zarr/output"``
        (split at the container, as DaCapo's examples write them)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str | Path):
            return cls(*split_path(value, ""))
        raise UsageError(f"the {role} must be a LocalArrayIdentifier or a path such as "
                         f"run.zarr/{role}, got {type(value).__name__}")


class ZarrArray:
    """A zarr array with world-unit geometry, opened through funlib.persistence.

    Get one with :meth:`open_from_array_identifier` (an existing array) or
    :meth:`create_from_array_identifier` (a new one). Reading with ``array[roi]`` returns
    the voxels of a world-unit ``Roi``; parts of the ROI outside the array read as 0.
    Writing with ``array[roi] = values`` needs ``roi`` inside the array.

    Axes follow funlib's convention, which DaCapo's arrays use too: spatial axes such as
    ``["z", "y", "x"]``, and a channel axis first, named ``"c^"``.
    """

    def __init__(self, array_identifier: LocalArrayIdentifier, name: str = "", mode: str = "r+"):
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' (read-only) or 'r+' (read-write), got {mode!r}")
        self.array_identifier = array_identifier
        self.name = name
        self.file_name = Path(array_identifier.container)
        self.dataset = array_identifier.dataset
        self._mode = mode
        location = array_identifier.path
        # through storage: funlib, DaCapo and bare zarr arrays, OME-Zarr images (level 0,
        # e.g. the labels ``process`` writes) all open with their geometry
        volume = open_volume(location, array_identifier.dataset)
        if volume.kind not in ("zarr", "ome-zarr"):
            raise InvalidInputError(f"{location} is {volume.kind}, not zarr: ZarrArray reads zarr")
        try:
            self._zarr = zarr.open_array(str(volume.path), mode=mode)
        except Exception as error:  # zarr raises many types for unreadable stores
            raise InvalidInputError(f"cannot open {location} as a zarr array: {error}") from None
        volume.data = self._zarr
        self._array: Array = volume.funlib()

    # ------------------------------------------------------------------ construction
    @classmethod
    def open_from_array_identifier(
        cls, array_identifier: LocalArrayIdentifier, name: str = "", mode: str = "r+"
    ) -> ZarrArray:
        """Open an existing array; ``mode="r"`` opens it read-only."""
        return cls(array_identifier, name=name, mode=mode)

    @classmethod
    def create_from_array_identifier(
        cls,
        array_identifier: LocalArrayIdentifier,
        axes: list[str],
        roi: Roi,
        num_channels: int | None,
        voxel_size,
        dtype,
        mode: str = "a",
        write_size=None,
        name: str | None = None,
        overwrite: bool = False,
    ) -> ZarrArray:
        """Create an array covering ``roi`` (world units) and open it read-write.

        ``axes`` names the spatial axes (channel axes in it, "c" or "c^", are ignored);
        ``num_channels`` > 1 adds a channel axis "c^" in front, ``None`` or 1 gives none.
        ``write_size`` is the chunk size in world units (default: about 5 MB per chunk).

        ``mode`` says what happens if the array exists already: ``"a"`` (default) reopens it
        when its geometry, axes and dtype are the ones asked for and refuses otherwise;
        ``"w"`` replaces it; ``"w-"`` refuses. ``overwrite=True`` is the same as ``"w"``.
        Existing data are never zeroed silently, and a group (or the container itself) at
        the identifier is never replaced: only an array is.
        """
        if mode not in ("a", "w", "w-"):
            raise ValueError(f"mode must be 'a', 'w' or 'w-' to create an array, got {mode!r}")
        voxel_size = Coordinate(voxel_size)
        roi = Roi(roi.offset, roi.shape)
        spatial = [a for a in axes if not is_channel_axis(a)]
        if len(spatial) != voxel_size.dims or roi.dims != voxel_size.dims:
            raise ValueError(
                f"axes {axes}, roi {roi} and voxel size {voxel_size} disagree on the number "
                "of spatial dimensions"
            )
        if any(o % v for o, v in zip(roi.offset, voxel_size)) or any(
            s % v for s, v in zip(roi.shape, voxel_size)
        ):
            raise ValueError(f"roi {roi} is not on the voxel grid {voxel_size}")
        channels = int(num_channels) if num_channels is not None and num_channels > 1 else None
        axis_names = (["c^"] if channels else []) + spatial
        spatial_shape = tuple(int(s) for s in roi.shape / voxel_size)
        shape = ((channels,) if channels else ()) + spatial_shape

        if write_size is None:
            itemsize = np.dtype(dtype).itemsize
            side = int((DEFAULT_CHUNK_BYTES / (channels or 1) / itemsize) ** (1 / voxel_size.dims))
            write_size = Coordinate((max(side, 1),) * voxel_size.dims) * voxel_size
        write_size = Coordinate(write_size)
        if any(w % v for w, v in zip(write_size, voxel_size)):
            raise ValueError(
                f"write size {write_size} is not a multiple of the voxel size {voxel_size}"
            )
        chunk = tuple(min(int(w // v), s) for w, v, s in zip(write_size, voxel_size, spatial_shape))
        chunk_shape = ((channels,) if channels else ()) + chunk

        identifier = LocalArrayIdentifier(array_identifier.container, array_identifier.dataset)
        location = identifier.path
        replacing = overwrite or mode == "w"
        if replacing and location.exists() and zarr_node(location)[0] != "array":
            kind = ("a file" if not location.is_dir() else
                    "a group" if zarr_node(location)[0] else "a folder")
            held = sorted(p.name for p in location.iterdir() if p.is_dir()) \
                if location.is_dir() else []
            raise UnsafeOutputError(
                f"{location} is {kind}" + (f" holding {', '.join(held)}" if held else "")
                + ": only an array is replaced; name a dataset for the new array (nothing was "
                "changed)")
        if location.exists() and not overwrite and mode != "w":
            if mode == "w-":
                raise OutputExistsError(f"{location} already exists")
            existing = cls(identifier, name=name or identifier.dataset)
            wanted = (axis_names, roi, voxel_size, np.dtype(dtype), shape)
            found = (existing.axes, existing.roi, existing.voxel_size, existing.dtype,
                     tuple(existing.data.shape))
            if found != wanted:
                raise OutputExistsError(
                    f"{location} already exists with axes, roi, voxel size, dtype, shape {found}, "
                    f"not {wanted}; pass overwrite=True to replace it"
                )
            return existing
        create_array(
            location,
            identifier.dataset,
            shape=shape,
            dtype=dtype,
            axis_names=axis_names,
            voxel_size=voxel_size,
            offset=roi.offset,
            units=[DEFAULT_UNIT] * voxel_size.dims,
            chunk_shape=chunk_shape,
            overwrite=True,
        )
        return cls(identifier, name=name or identifier.dataset)

    # ------------------------------------------------------------------ description
    def __str__(self) -> str:
        return f"ZarrArray({self.file_name}, {self.dataset})"

    __repr__ = __str__

    def __reduce__(self):
        # reopen by path in another process (daisy workers) instead of pickling open stores
        return (type(self), (self.array_identifier, self.name, self._mode))

    @property
    def mode(self) -> str:
        """How the array is open: "r" (read-only) or "r+" (read-write)."""
        return self._mode

    @property
    def writable(self) -> bool:
        return self._mode != "r"

    @property
    def attrs(self):
        """The zarr attributes (persistent, dict-like)."""
        return self._zarr.attrs

    @property
    def axes(self) -> list[str]:
        return list(self._array.axis_names)

    @property
    def spatial_axes(self) -> list[str]:
        return [a for a in self.axes if not is_channel_axis(a)]

    @property
    def dims(self) -> int:
        """Number of spatial dimensions."""
        return self.voxel_size.dims

    @property
    def voxel_size(self) -> Coordinate:
        return Coordinate(self._array.voxel_size)

    @property
    def roi(self) -> Roi:
        """The spatial extent in world units."""
        return self._array.roi

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._zarr.dtype)

    @property
    def num_channels(self) -> int | None:
        channel = [i for i, a in enumerate(self.axes) if is_channel_axis(a)]
        return int(self._zarr.shape[channel[0]]) if channel else None

    @property
    def data(self) -> zarr.Array:
        """The underlying zarr array (voxel indexing, channel axis first)."""
        return self._zarr

    # ------------------------------------------------------------------ data
    def __getitem__(self, roi: Roi) -> np.ndarray:
        """The voxels of a world-unit ROI; parts outside the array read as 0."""
        return self._array.to_ndarray(self._on_grid(roi), fill_value=0)

    def __setitem__(self, roi: Roi, value) -> None:
        if not self.writable:
            raise PermissionError(f"{self} is open read-only (mode 'r')")
        self._array[self._on_grid(roi)] = value

    def _on_grid(self, roi: Roi) -> Roi:
        """``roi``, refused unless it starts and ends on the array's voxels: funlib would
        round it down, reading or writing voxels half a voxel away from those asked for."""
        roi = Roi(roi.offset, roi.shape)
        grid_offset = self.roi.offset
        if ((roi.offset - grid_offset) % self.voxel_size != Coordinate((0,) * self.dims)
                or roi.shape % self.voxel_size != Coordinate((0,) * self.dims)):
            raise InvalidInputError(
                f"ROI {roi} is off {self}'s voxel grid (voxel size {self.voxel_size}, offset "
                f"{grid_offset}): give a ROI whose offset and shape are multiples of the "
                "voxel size from that offset")
        return roi

    def add_metadata(self, metadata: dict[str, Any]) -> None:
        """Store JSON-serializable values in the array's attributes."""
        if not self.writable:
            raise PermissionError(f"{self} is open read-only (mode 'r')")
        self._zarr.update_attributes(metadata)  # one write, not one per key
