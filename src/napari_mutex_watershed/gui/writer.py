"""napari writers: export a Labels layer to zarr (funlib.persistence metadata) or TIFF.

- ``.zarr``: the path is a container; the layer goes into ``<path>/<layer name>`` (other
  arrays of an existing container are kept, in the container's zarr format), written with
  ``storage.write_labels`` so ``funlib.persistence.open_ds`` sees voxel size and offset (the
  layer's scale and translate when they are integers) and this plugin's reader opens it
  again. The parameters a result was made with (``metadata[PARAMETERS_ATTR]``) are stored
  with it. Only an earlier export (``EXPORT_ATTR``) is replaced: a path that is an array, or
  a layer name that is another array of the container (the affinities, a run's output,
  anything another tool wrote), is refused with nothing changed.
- ``.tif`` / ``.tiff``: one TIFF (BigTIFF when large), a page per 2D plane, zlib-compressed,
  with axes, scale, translate and parameters in its JSON description. napari's builtin
  reader opens it (as an image layer; *Layers > Convert to Labels* to paint on it).

Both write uint32 when the ids fit (64-bit and signed ids are narrowed), and read lazy
(dask / zarr) layers one slab at a time, so an export does not load the whole volume. Both
write beside the target and put the result in its place once complete: a save that fails
leaves what was there, and a layer saved onto the export it was read from is copied in full
before that export goes. Refusals are ``UnsafeOutputError``, not ``ValueError``, which
napari takes for "not this writer" and drops with its message.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np

# EXPORT_ATTR marks exported arrays, so the reader opens them from a container
from ..attributes import EXPORT_ATTR, PARAMETERS_ATTR, PROVENANCE_ATTRS
from ..errors import InvalidInputError, UnsafeOutputError
from ..regions import voxel_grid
from ..storage.paths import PARTIAL_SUFFIX, ZARR_SUFFIXES, named_like, zarr_node
from .layers import level0

#: Layer metadata copied into the zarr attributes when present (provenance of results).
PROVENANCE_KEYS = (PARAMETERS_ATTR, *PROVENANCE_ATTRS)
SLAB_BYTES = 64 * 2**20


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._")
    return cleaned or "labels"


def _minmax(array) -> tuple[int, int]:
    if hasattr(array, "compute") or not isinstance(array, np.ndarray):
        import dask.array as da

        lazy = array if hasattr(array, "compute") else da.from_array(array)
        low, high = da.compute(lazy.min(), lazy.max())
        return int(low), int(high)
    if array.size == 0:
        return 0, 0
    return int(array.min()), int(array.max())


def export_dtype(array) -> np.dtype:
    """uint32 when the ids fit; unsigned 8/16/32-bit stay as they are."""
    dtype = np.dtype(array.dtype)
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got {dtype}")
    if dtype.kind == "u" and dtype.itemsize <= 4:
        return dtype
    low, high = _minmax(array)
    if low >= 0 and high < 2**32:
        return np.dtype(np.uint32)
    return dtype


def _geometry(meta: dict, ndim: int):
    scale = tuple(meta.get("scale") or (1,) * ndim)[-ndim:]
    translate = tuple(meta.get("translate") or (0,) * ndim)[-ndim:]
    grid = voxel_grid(scale, translate)
    if grid is None:
        return (1,) * ndim, (0,) * ndim, scale, translate
    return *grid, scale, translate


def _axis_names(ndim: int) -> list[str]:
    names = ["t", "z", "y", "x"]
    return names[-ndim:] if ndim <= 4 else [f"d{i}" for i in range(ndim - 3)] + names[1:]


def _jsonable(value):
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist")
                                 else str(o)))


def _put_in_place(target: Path, write) -> None:
    """``write(partial)`` beside ``target``, then the result moved to ``target``; what was
    at ``target`` is removed only then (a failed write leaves it, and the partial goes)."""
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}")
    try:
        write(partial)
        if target.is_dir():  # an earlier export: moved aside, removed once replaced
            replaced = partial.with_name(partial.name + ".replaced")
            target.rename(replaced)
            partial.rename(target)
            shutil.rmtree(replaced, ignore_errors=True)
        else:
            os.replace(partial, target)
    except BaseException:
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)
        raise


def write_labels_zarr(path: str, data, meta: dict) -> list[str]:
    """npe2 single-layer writer: a Labels layer into ``path`` (a .zarr container)."""
    from ..storage import write_labels

    container = Path(path)
    if not named_like(container.name, ZARR_SUFFIXES):
        raise ValueError(f"{path}: expected a path ending in .zarr")
    if container.exists() and not container.is_dir():
        raise UnsafeOutputError(f"{container} is a file, not a zarr container: save into "
                                "another .zarr (nothing was changed)")
    if zarr_node(container)[0] == "array":
        raise UnsafeOutputError(f"{container} is an array, not a container: save into another "
                                ".zarr (nothing was changed)")
    array = level0(data)
    ndim = array.ndim
    dtype = export_dtype(array)
    voxel_size, offset, scale, translate = _geometry(meta, ndim)
    name = _safe_name(meta.get("name") or "labels")
    metadata = meta.get("metadata") or {}
    attributes = {EXPORT_ATTR: {"layer": meta.get("name") or name, "scale": list(scale),
                                "translate": list(translate)}}
    for key in PROVENANCE_KEYS:
        if metadata.get(key) is not None:
            attributes[key] = _jsonable(metadata[key])
    target = container / name
    if target.exists() and EXPORT_ATTR not in zarr_node(target)[1]:
        raise UnsafeOutputError(
            f"{target} exists and is not a layer saved by this plugin (the affinities, a "
            "run's output or another tool's array), so it is never replaced: rename the "
            "layer or save into another .zarr (nothing was changed)")
    # cast lazily: storage writes a slab at a time, so a large layer is never loaded whole
    values = array.astype(dtype) if hasattr(array, "dask") else _Cast(array, dtype)
    try:
        _put_in_place(target, lambda partial: write_labels(
            partial, values, voxel_size=voxel_size, offset=offset, attributes=attributes,
            axis_names=_axis_names(ndim), chunk_shape=tuple(min(64, s) for s in array.shape),
            slab_bytes=SLAB_BYTES))
    except InvalidInputError as error:  # where it cannot go (inside an array, say)
        raise UnsafeOutputError(str(error)) from None
    return [str(target)]


class _Cast:
    """Slices of ``array`` as ``dtype``, read only when indexed."""

    def __init__(self, array, dtype):
        self.array, self.dtype, self.shape = array, np.dtype(dtype), tuple(array.shape)

    def __getitem__(self, index):
        return np.asarray(self.array[index]).astype(self.dtype, copy=False)


def write_labels_tiff(path: str, data, meta: dict) -> list[str]:
    """npe2 single-layer writer: a Labels layer into one TIFF file."""
    import tifffile

    array = level0(data)
    dtype = export_dtype(array)
    ndim = array.ndim
    _, _, scale, translate = _geometry(meta, ndim)
    description = {
        "axes": "".join(_axis_names(ndim)).upper() if ndim <= 4 else None,
        "scale": [float(s) for s in scale],
        "translate": [float(t) for t in translate],
        "name": meta.get("name"),
    }
    stored = (meta.get("metadata") or {}).get(PARAMETERS_ATTR)
    if stored is not None:
        description[PARAMETERS_ATTR] = _jsonable(stored)
    description = {k: v for k, v in description.items() if v is not None}
    shape = tuple(int(s) for s in array.shape)

    def planes():
        for index in np.ndindex(*shape[:-2]) if ndim > 2 else [()]:
            yield np.ascontiguousarray(np.asarray(array[index]).astype(dtype, copy=False))

    nbytes = int(np.prod(shape)) * dtype.itemsize
    if Path(path).is_dir():
        raise UnsafeOutputError(f"{path} is a folder: save the TIFF under another name "
                                "(nothing was changed)")
    _put_in_place(Path(path), lambda partial: tifffile.imwrite(
        partial,
        data=planes() if ndim > 2 else np.asarray(array).astype(dtype, copy=False),
        shape=shape if ndim > 2 else None,
        dtype=dtype if ndim > 2 else None,
        photometric="minisblack",
        compression="zlib",
        bigtiff=nbytes > 2**32 - 2**25,
        metadata=description,
    ))
    return [str(path)]

