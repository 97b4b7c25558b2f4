"""napari layers as a full run's input and output: which zarr array a layer shows, where its
result goes by default, how the result is placed and opened, and what one run was asked.

No Qt: layers are duck-typed (``metadata``, ``source``, ``scale``, ``translate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..blockwise.run_outputs import (
    DEFAULT_OUTPUT_NAME,
    content_hash,
    data_dir,
    safe_name,
    stored_hash,
    write_guide_copy,
    write_input_copy,
)
from ..parameters import WatershedParameters
from ..regions import voxel_grid
from ..storage.paths import ZARR_SUFFIXES, named_like
from .layers import level0


def zarr_source(layer) -> Path | None:
    """The zarr affinities array ``layer`` shows, if it can be read in place; else None.

    Candidates: ``metadata["source"]`` (set by this plugin's reader to the array path) and
    ``layer.source.path``. The array must open as affinities and the layer's data must be
    that array as a reader opened it (``reads_the_file``): a layer whose data was replaced,
    or a new layer given a copy of another's metadata, is copied, not read from the file.
    """
    from ..storage import open_affinities

    candidates = [layer.metadata.get("source")]
    source = getattr(layer, "source", None)
    candidates.append(getattr(source, "path", None))
    data = level0(layer)
    for candidate in candidates:
        if not candidate:
            continue
        path = Path(str(candidate))
        if not path.is_dir() or not any(named_like(p, ZARR_SUFFIXES) for p in path.parts):
            continue
        try:
            affinities = open_affinities(path)
        except Exception:  # not an affinities array (a container, OME group, N5, ...)
            continue
        if reads_the_file(data, affinities.path):
            return affinities.path
    return None


def reads_the_file(data, path: Path) -> bool:
    """Is ``data`` the zarr array at ``path``, or the dask array a reader made of it and
    nothing more (a slice, a computation or a copy of it is not the file's data)?"""
    import zarr

    def is_the_array(value) -> bool:
        store = getattr(value, "store", None)  # a LocalStore has a root, an FsspecStore a path
        root = getattr(store, "root", None) or getattr(store, "path", None)
        return (isinstance(value, zarr.Array) and root is not None
                and (Path(str(root)) / value.path).resolve() == Path(path).resolve())

    if isinstance(data, zarr.Array):
        return is_the_array(data)
    layers = getattr(getattr(data, "dask", None), "layers", None)
    if not layers or len(layers) > 2:  # da.from_array: the array, and its chunks' reads
        return False
    return any(is_the_array(value) for name, layer in layers.items()
               if name.startswith("original-") for value in layer.values())


def default_output(layer) -> Path:
    """``labels_mws`` beside zarr input (``<container>.zarr/labels_mws``, or
    ``image.zarr/labels/labels_mws`` for an OME-Zarr image), else a container in the data
    dir."""
    from ..storage.paths import labels_place

    source = zarr_source(layer)
    if source is not None:
        return labels_place(source, DEFAULT_OUTPUT_NAME)
    return data_dir() / "runs" / f"{safe_name(layer.name)}.zarr" / DEFAULT_OUTPUT_NAME



def world_geometry(layer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(voxel size, offset) for funlib metadata: the layer's scale and translate when they are
    integers (funlib's Coordinate is integral), else unit voxels at the origin. The result
    layer is always placed with the affinities layer's own scale and translate."""
    spatial = level0(layer).ndim - 1
    grid = voxel_grid(layer.scale[1:], layer.translate[1:])
    return grid if grid is not None else ((1,) * spatial, (0,) * spatial)



def open_result(output: Path, complete: bool = True):
    """The output labels as lazy dask arrays, one per pyramid level, so napari shows a large
    result at once (a single array when there is one level); a fresh graph name each time,
    so napari does not serve stale chunks from its cache while blocks are still being
    written. Until the run is complete the lower levels are strided views of level 0: the
    pyramid is the run's last step."""
    import uuid

    from ..storage import labels_levels, open_volume

    levels = open_volume(output).dask_levels(name=f"mutex-watershed-result-{uuid.uuid4().hex}")
    if not complete and len(levels) > 1:
        factors = [factor for _, factor in labels_levels(output)]
        levels = [levels[0][tuple(slice(None, None, f) for f in factor)] for factor in factors]
    return levels if len(levels) > 1 else levels[0]




@dataclass
class RunRequest:
    """One full run as asked: what the job is given, and the copies written for it."""

    layer_name: str
    placement: dict  # where the result layer goes (``visible_region.placement``)
    parameters: WatershedParameters
    workers: int
    block_size: tuple[int, ...]
    output: Path
    source: Path | None  # zarr array read in place, or None: an in-memory layer to copy
    shape: tuple[int, ...]
    voxel_size: tuple[int, ...] = ()  # the voxel grid the job reads (of the copies too)
    offset: tuple[int, ...] = ()
    input_path: Path | None = None
    overwrite: bool = False
    data: Any = None  # the affinities layer's data, while it is to be copied
    guides: dict = field(default_factory=dict)  # role (mask, seeds) -> layer data to copy
    guide_paths: dict = field(default_factory=dict)  # role -> the copy the job reads
    tokens: dict = field(default_factory=dict)  # copy ('input' or a role) -> content hash
    stale: set = field(default_factory=set)  # copies to (re)write

    @property
    def copy_current(self) -> bool:
        """Every copy already holds what the layers hold now (a rerun reuses them)."""
        return not self.stale

    def check_copies(self) -> None:
        """Hash what is copied for the job and compare with the copies on disk (in a
        thread: it reads every voxel)."""
        from ..storage import open_affinities

        if self.source is not None and self.guides:  # on the grid the job reads in place
            affinities = open_affinities(self.source)
            self.voxel_size = tuple(int(v) for v in affinities.voxel_size)
            self.offset = tuple(int(v) for v in affinities.spatial_roi.offset)
        copies = {role: (data, [], self.guide_paths[role]) for role, data in self.guides.items()}
        if self.source is None:
            copies["input"] = (self.data, self.parameters.offsets, self.input_path)
        for name, (data, offsets, path) in copies.items():
            self.tokens[name] = content_hash(data, offsets, self.voxel_size, self.offset)
            if stored_hash(path) != self.tokens[name]:
                self.stale.add(name)

    def write_copies(self) -> None:
        """Write the copies that are not current (in a thread), then let go of the layers'
        data."""
        if "input" in self.stale:
            write_input_copy(self.input_path, self.data, self.parameters.offsets,
                             self.voxel_size, self.offset, self.tokens["input"])
        for role, data in self.guides.items():
            if role in self.stale:
                write_guide_copy(self.guide_paths[role], data, self.voxel_size, self.offset,
                                 self.tokens[role])
        self.data, self.guides = None, {}
