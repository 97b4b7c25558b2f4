"""napari reader: affinities and labels in zarr, OME-Zarr, N5 and HDF5, read lazily.

Everything is opened through ``storage`` (the one module that reads files), so the layers
have the geometry the CLI and the blockwise runs see.

- An affinities array (channel axis first) opens as an Image layer of dask data, with
  ``metadata["offsets"]`` from its ``offsets`` attribute and scale/translate from its voxel
  size and offset. Without stored axes, an array with an ``offsets`` attribute, or of four
  axes of floats or uint8, is taken as affinities (channel first), as the command does.
- Labels written by this package (attribute ``mutex_watershed_parameters``: blockwise results,
  which are OME-Zarr labels with a pyramid) open as a multiscale Labels layer with the
  parameters in its metadata (and the block size, input and completeness), so the widget can
  restore them; so do Labels layers exported by the plugin's zarr writer
  (``mutex_watershed_export``, whose scale and translate are the layer's, even where the
  array could only store unit voxels) and any OME-Zarr labels image (``image-label``).
- A container path (``volume.zarr``, ``volume.n5``) opens its ``affinities`` array and every
  top-level labels array or image written by this package (a sample's ground truth too); an
  OME-Zarr image group opens as a multiscale layer. An HDF5 file (``volume.h5``) opens its
  ``affinities`` dataset, else every dataset of 2 to 4 axes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..attributes import EXPORT_ATTR, PARAMETERS_ATTR, PROVENANCE_ATTRS, SAMPLE_ATTR
from ..parameters import WatershedParameters
from ..storage.paths import (
    HDF5_SUFFIXES,
    arrays_in,
    named_like,
    node_kind,
    read_json,
    zarr_node,
)

AFFINITIES = "affinities"


def napari_get_reader(path):
    """npe2 reader contribution: a reader function if ``path`` is something we read."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(str(path).rstrip("/"))
    if not any(named_like(p) for p in path.parts):
        return None
    if _kind(path) is None:
        return None
    return read


def read(path) -> list[tuple]:
    """Layer data tuples for ``path`` (see the module docstring)."""
    if isinstance(path, list):
        path = path[0]
    path = Path(str(path).rstrip("/"))
    kind = _kind(path)
    if kind in ("array", "ome", "n5-array", "hdf5"):
        return [_read_volume(path)]
    if kind in ("group", "n5-group"):
        return _read_container(path)
    if kind == "hdf5-file":
        return [_read_volume(path / name) for name in _hdf5_layers(path)]
    raise ValueError(f"{path} is not a zarr, OME-Zarr, N5 or HDF5 array or container")


# ---------------------------------------------------------------------------- detection
def _kind(path: Path) -> str | None:
    if named_like(path.name, HDF5_SUFFIXES):
        return "hdf5-file" if path.is_file() else None
    if any(named_like(p, HDF5_SUFFIXES) for p in path.parts):
        return "hdf5"
    return node_kind(path) if path.is_dir() else None


def _hdf5_layers(path: Path) -> list[str]:
    """The datasets an HDF5 file opens as: its affinities, else every dataset of 2 to 4
    axes (napari checks that a path exists before any reader sees it, so a dataset inside
    the file cannot be named from its dialogs)."""
    import h5py

    from ..storage.blocks import hdf5_datasets

    with h5py.File(path, "r") as handle:
        datasets = hdf5_datasets(handle)
    if AFFINITIES in datasets:
        return [AFFINITIES]
    volumes = [name for name, ndim in datasets.items() if 2 <= ndim <= 4]
    if not volumes:
        raise ValueError(f"{path} holds no dataset of 2 to 4 axes (its datasets: "
                         f"{', '.join(datasets) or 'none'})")
    return volumes


def _attributes(path: Path, kind: str) -> dict:
    if kind == "n5-array":
        return read_json(path / "attributes.json")
    node, attrs = zarr_node(path)
    return {**attrs, **(attrs.get("ome") or {})}


# ---------------------------------------------------------------------------- layers
def _layer_tuple(data, attrs: dict, voxel_size, offset, axis_names, name: str, path: Path,
                 multiscale: bool = False, units=()) -> tuple:
    """An Image tuple for affinities (channels first), a Labels tuple for labels; the
    spatial axes carry the stored length unit (napari's scale bar and status say nm, not
    pixels)."""
    from ..storage.inputs import PICOMETRES

    level0 = data[0] if multiscale else data
    spatial = len(voxel_size)
    channels = level0.ndim - spatial
    scale = (1.0,) * channels + tuple(float(v) for v in voxel_size)
    translate = (0.0,) * channels + tuple(float(v) for v in offset)
    meta = {"source": str(path)}
    kwargs = {"name": name, "scale": scale, "translate": translate, "metadata": meta}
    if len(units) == spatial and all(u in PICOMETRES for u in units):
        kwargs["units"] = ("pixel",) * channels + tuple(units)
    if axis_names and len(axis_names) == level0.ndim:
        kwargs["axis_labels"] = tuple(a.rstrip("^") for a in axis_names)
    if multiscale:
        kwargs["multiscale"] = True
    exported = attrs.get(EXPORT_ATTR) or {}
    if all(len(exported.get(key) or ()) == level0.ndim for key in ("scale", "translate")):
        # the layer's own, also where the array could hold only unit voxels at the origin
        kwargs["scale"] = tuple(float(v) for v in exported["scale"])
        kwargs["translate"] = tuple(float(v) for v in exported["translate"])
    stored = attrs.get(PARAMETERS_ATTR)
    if stored and channels == 0:
        parameters = WatershedParameters.model_validate(
            json.loads(stored) if isinstance(stored, str) else stored
        )
        meta[PARAMETERS_ATTR] = json.loads(parameters.to_json())
        meta.update({key: attrs[key] for key in PROVENANCE_ATTRS if key in attrs})
        return data, kwargs, "labels"
    if (attrs.get(EXPORT_ATTR) or attrs.get("image-label") is not None) and channels == 0:
        return data, kwargs, "labels"
    if attrs.get("offsets") is not None:  # (unreadable ones: the widget asks for offsets)
        from ..storage.inputs import stored_offsets

        offsets, _ = stored_offsets(attrs["offsets"], path)
        if offsets:
            meta["offsets"] = [list(o) for o in offsets]
    if np.issubdtype(level0.dtype, np.floating):
        kwargs["contrast_limits"] = (0.0, 1.0)
    if channels == 0 and np.issubdtype(level0.dtype, np.integer) and level0.dtype != np.uint8:
        return data, kwargs, "labels"
    return data, kwargs, "image"


def _read_volume(path: Path) -> tuple:
    """One layer through storage: every pyramid level when there are several."""
    from ..storage import open_volume

    volume = open_volume(path, AFFINITIES)
    dtype = np.dtype(volume.data.dtype)
    if volume.note and (volume.attrs.get("offsets") or (
            volume.data.ndim == 4 and (dtype.kind == "f" or dtype == np.uint8))):
        # no axes stored, but affinities: an offsets attribute, or four axes of floats or uint8
        volume = open_volume(path, AFFINITIES, role="affinities")
    levels = volume.dask_levels()
    attrs = dict(volume.attrs)
    if volume.kind == "ome-zarr":
        attrs.update(_attributes(path if _kind(path) == "ome" else path.parent, "ome"))
    # the image's name, not its level's ("labels", not "0")
    name = path.name if _kind(path) != "array" or volume.kind != "ome-zarr" else path.parent.name
    # in the file's own terms, as other readers (napari-ome-zarr) place its layers
    stored = volume.file_geometry()
    return _layer_tuple(levels if len(levels) > 1 else levels[0], attrs,
                        stored.sizes(volume.voxel_size), stored.positions(volume.offset),
                        volume.axis_names, name=name, path=path, multiscale=len(levels) > 1,
                        units=stored.units)


def _read_container(path: Path) -> list[tuple]:
    layers = []
    # (hidden: a save under way, or one a kill interrupted)
    for child in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        kind = _kind(child)
        if kind not in ("array", "n5-array", "ome"):
            continue
        attrs = _attributes(child, kind)
        if child.name != AFFINITIES and not any(
                key in attrs for key in (PARAMETERS_ATTR, EXPORT_ATTR, SAMPLE_ATTR,
                                         "image-label")):
            continue
        layers.append(_read_volume(child))
    if not layers:
        held = arrays_in(path)
        raise ValueError(
            f"{path} holds no '{AFFINITIES}' array and no labels written by this plugin; "
            f"open one of its arrays directly: {', '.join(held) if held else 'it holds none'}"
        )
    # affinities first (bottom), labels above them
    layers.sort(key=lambda layer: layer[2] != "image")
    return layers
