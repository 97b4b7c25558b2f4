"""napari reader: affinities and labels in zarr, OME-Zarr and N5 containers, read lazily.

- An affinities array (channel axis first, as ``storage.write_affinities`` and the blockwise
  runner write it) opens as an Image layer of dask data, with ``metadata["offsets"]`` from the
  array's ``offsets`` attribute and scale/translate from its voxel size and offset.
- A labels array written by this package (attribute ``mutex_watershed_parameters``) opens as
  a Labels layer with the parameters in its metadata (and, for blockwise results, the block
  size, input and completeness), so the widget can restore them; so does a Labels layer
  exported by the plugin's zarr writer (attribute ``mutex_watershed_export``).
- A container path (``volume.zarr``) opens its ``affinities`` array and every top-level
  labels array written by this package; an OME-Zarr image group opens as a multiscale layer.
- N5 (which zarr 3 no longer reads) is read by a small dask-backed block reader here.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import zlib
from pathlib import Path

import dask.array as da
import numpy as np

from ..attributes import COMPLETE_ATTR, PARAMETERS_ATTR
from ..parameters import WatershedParameters

#: Written by this plugin's zarr writer (gui/writer.py) on exported Labels layers.
EXPORT_ATTR = "mutex_watershed_export"
#: Provenance attributes of blockwise results, copied into the layer metadata.
PROVENANCE_ATTRS = ("mutex_watershed_block_size", "mutex_watershed_input", COMPLETE_ATTR)

SUFFIXES = (".zarr", ".n5")
AFFINITIES = "affinities"


def napari_get_reader(path):
    """npe2 reader contribution: a reader function if ``path`` is something we read."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(str(path).rstrip("/"))
    if not path.is_dir() or not any(p.endswith(SUFFIXES) for p in path.parts):
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
    if kind == "n5-array":
        return [_layer_tuple(*_open_n5(path), name=path.name, path=path)]
    if kind == "ome":
        return [_read_ome(path)]
    if kind == "array":
        return [_read_zarr_array(path)]
    if kind in ("group", "n5-group"):
        return _read_container(path, n5=kind == "n5-group")
    raise ValueError(f"{path} is not a zarr, OME-Zarr or N5 array or container")


# ---------------------------------------------------------------------------- detection
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _zarr_attrs(path: Path) -> dict:
    v3 = _read_json(path / "zarr.json")
    if v3:
        return v3.get("attributes", {}) or {}
    return _read_json(path / ".zattrs")


def _multiscales(attrs: dict):
    return attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")


def _kind(path: Path) -> str | None:
    if (path / "attributes.json").exists() or path.suffix == ".n5":
        attrs = _read_json(path / "attributes.json")
        return "n5-array" if "dimensions" in attrs else "n5-group"
    v3 = _read_json(path / "zarr.json")
    if v3:
        node = v3.get("node_type")
        if node == "array":
            return "array"
        if node == "group":
            return "ome" if _multiscales(v3.get("attributes", {}) or {}) else "group"
        return None
    if (path / ".zarray").exists():
        return "array"
    if (path / ".zgroup").exists():
        return "ome" if _multiscales(_read_json(path / ".zattrs")) else "group"
    return None


# ---------------------------------------------------------------------------- layers
def _layer_tuple(data, attrs: dict, voxel_size, offset, axis_names, name: str, path: Path,
                 multiscale: bool = False) -> tuple:
    """An Image tuple for affinities (channels first), a Labels tuple for our labels."""
    level0 = data[0] if multiscale else data
    spatial = len(voxel_size)
    channels = level0.ndim - spatial
    scale = (1.0,) * channels + tuple(float(v) for v in voxel_size)
    translate = (0.0,) * channels + tuple(float(v) for v in offset)
    meta = {"source": str(path)}
    kwargs = {"name": name, "scale": scale, "translate": translate, "metadata": meta}
    if axis_names and len(axis_names) == level0.ndim:
        kwargs["axis_labels"] = tuple(a.rstrip("^") for a in axis_names)
    if multiscale:
        kwargs["multiscale"] = True
    stored = attrs.get(PARAMETERS_ATTR)
    if stored and channels == 0:
        parameters = WatershedParameters.model_validate(
            json.loads(stored) if isinstance(stored, str) else stored
        )
        meta[PARAMETERS_ATTR] = json.loads(parameters.to_json())
        meta.update({key: attrs[key] for key in PROVENANCE_ATTRS if key in attrs})
        return data, kwargs, "labels"
    if attrs.get(EXPORT_ATTR) and channels == 0:
        return data, kwargs, "labels"
    offsets = attrs.get("offsets")
    if offsets:
        meta["offsets"] = [[int(v) for v in o] for o in offsets]
    if np.issubdtype(level0.dtype, np.floating):
        kwargs["contrast_limits"] = (0.0, 1.0)
    if channels == 0 and np.issubdtype(level0.dtype, np.integer) and level0.dtype != np.uint8:
        return data, kwargs, "labels"
    return data, kwargs, "image"


def _read_zarr_array(path: Path) -> tuple:
    from funlib.persistence import open_ds

    array = open_ds(str(path), mode="r")
    return _layer_tuple(
        array.data, dict(array.attrs), tuple(array.voxel_size), tuple(array.offset),
        list(array.axis_names), name=path.name, path=path,
    )


def _read_container(path: Path, n5: bool) -> list[tuple]:
    layers = []
    children = sorted(p for p in path.iterdir() if p.is_dir())
    for child in children:
        kind = _kind(child)
        if kind not in ("array", "n5-array", "ome"):
            continue
        attrs = (_read_json(child / "attributes.json") if kind == "n5-array"
                 else _zarr_attrs(child))
        if child.name != AFFINITIES and PARAMETERS_ATTR not in attrs and EXPORT_ATTR not in attrs:
            continue
        if kind == "n5-array":
            layers.append(_layer_tuple(*_open_n5(child), name=child.name, path=child))
        elif kind == "ome":
            layers.append(_read_ome(child))
        else:
            layers.append(_read_zarr_array(child))
    if not layers:
        raise ValueError(
            f"{path} holds no '{AFFINITIES}' array and no labels written by this plugin; "
            f"open one of its arrays directly (e.g. {path}/<name>)"
        )
    # affinities first (bottom), labels above them
    layers.sort(key=lambda layer: layer[2] != "image")
    return layers


# ---------------------------------------------------------------------------- OME-Zarr
def _read_ome(path: Path) -> tuple:
    import zarr

    attrs = _zarr_attrs(path)
    multiscale = _multiscales(attrs)[0]
    axes = multiscale.get("axes") or [{"name": n} for n in ("z", "y", "x")]
    names = [a["name"] if isinstance(a, dict) else a for a in axes]
    types = [a.get("type") if isinstance(a, dict) else None for a in axes]
    spatial = [i for i, (n, t) in enumerate(zip(names, types))
               if t == "space" or (t is None and n in ("z", "y", "x"))]
    if not spatial or spatial != list(range(len(names) - len(spatial), len(names))):
        raise ValueError(f"{path}: expected the spatial axes last, got axes {names}")
    global_scale = np.ones(len(names))
    for transform in multiscale.get("coordinateTransformations", []) or []:
        if transform.get("type") == "scale":
            global_scale = global_scale * np.asarray(transform["scale"], float)
    levels, level0_scale, level0_translate = [], None, None
    for i, dataset in enumerate(multiscale["datasets"]):
        levels.append(da.from_zarr(zarr.open_array(str(path / dataset["path"]), mode="r")))
        if i == 0:
            scale = np.ones(len(names))
            translate = np.zeros(len(names))
            for transform in dataset.get("coordinateTransformations", []) or []:
                if transform.get("type") == "scale":
                    scale = np.asarray(transform["scale"], float)
                elif transform.get("type") == "translation":
                    translate = np.asarray(transform["translation"], float)
            level0_scale, level0_translate = scale * global_scale, translate * global_scale
    first = spatial[0]
    return _layer_tuple(
        levels if len(levels) > 1 else levels[0],
        attrs,
        tuple(level0_scale[first:]),
        tuple(level0_translate[first:]),
        names,
        name=path.name,
        path=path,
        multiscale=len(levels) > 1,
    )


# ---------------------------------------------------------------------------- N5
_N5_DTYPES = {
    "uint8": "u1", "uint16": "u2", "uint32": "u4", "uint64": "u8",
    "int8": "i1", "int16": "i2", "int32": "i4", "int64": "i8",
    "float32": "f4", "float64": "f8",
}


def _n5_decompress(raw: bytes, compression: dict) -> bytes:
    kind = compression.get("type", "raw")
    if kind == "raw":
        return raw
    if kind == "gzip":
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else zlib.decompress(raw)
    if kind == "bzip2":
        return bz2.decompress(raw)
    if kind == "xz":
        return lzma.decompress(raw)
    import numcodecs

    codecs = {"blosc": numcodecs.Blosc, "zstd": numcodecs.Zstd, "lz4": numcodecs.LZ4}
    if kind in codecs:
        return bytes(codecs[kind]().decode(raw))
    raise ValueError(f"unsupported N5 compression {kind!r}")


def _read_n5_block(path: Path, index: tuple[int, ...], shape, dtype, compression) -> np.ndarray:
    """One block; ``index`` and ``shape`` in numpy (C) order, the file is in N5 (F) order."""
    file = path.joinpath(*(str(i) for i in index[::-1]))
    if not file.exists():
        return np.zeros(shape, dtype)
    raw = file.read_bytes()
    mode, ndim = np.frombuffer(raw[:4], ">u2")
    block = np.frombuffer(raw[4:4 + 4 * ndim], ">u4")[::-1]
    start = 4 + 4 * int(ndim) + (4 if mode == 1 else 0)
    values = np.frombuffer(_n5_decompress(raw[start:], compression),
                           np.dtype(dtype).newbyteorder(">"))
    values = values[: int(np.prod(block))].reshape(tuple(int(b) for b in block))
    out = np.zeros(shape, dtype)
    out[tuple(slice(0, min(a, b)) for a, b in zip(block, shape))] = values[
        tuple(slice(0, min(a, b)) for a, b in zip(block, shape))
    ]
    return out


def _open_n5(path: Path):
    """(dask data, attrs, voxel size, offset, axis names) of an N5 dataset."""
    attrs = _read_json(path / "attributes.json")
    shape = tuple(int(v) for v in attrs["dimensions"][::-1])
    blocks = tuple(int(v) for v in attrs["blockSize"][::-1])
    dtype = np.dtype(_N5_DTYPES[attrs["dataType"]])
    compression = attrs.get("compression") or {"type": attrs.get("compressionType", "raw")}
    chunks = tuple(
        tuple(min(b, n - i) for i in range(0, n, b)) for n, b in zip(shape, blocks)
    )

    def load(block_info=None):
        info = block_info[None]
        index = tuple(info["chunk-location"])
        return _read_n5_block(path, index, info["chunk-shape"], dtype, compression)

    data = da.map_blocks(load, chunks=chunks, dtype=dtype, meta=np.empty((0,) * len(shape), dtype))
    # funlib/daisy convention for N5: voxel size ("resolution") and offset in N5 (x, y, z) order
    voxel_size = attrs.get("voxel_size") or attrs.get("resolution")
    offset = attrs.get("offset")
    axis_names = attrs.get("axis_names")
    spatial = len(voxel_size) if voxel_size else (len(shape) - 1 if "offsets" in attrs
                                                  else len(shape))
    voxel_size = tuple(voxel_size[::-1]) if voxel_size else (1,) * spatial
    offset = tuple(offset[::-1]) if offset else (0,) * spatial
    if axis_names:
        axis_names = list(axis_names[::-1])
    return data, attrs, voxel_size, offset, axis_names
