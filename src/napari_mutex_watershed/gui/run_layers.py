"""napari layers as a full run's input and output: which zarr array a layer shows, where its
result goes by default, how the result is placed and opened, and what one run was asked.

No Qt: layers are duck-typed (``metadata``, ``source``, ``scale``, ``translate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..blockwise.run_outputs import DEFAULT_OUTPUT_NAME, data_dir, safe_name
from ..parameters import WatershedParameters
from .layers import level0


def zarr_source(layer) -> Path | None:
    """The zarr affinities array ``layer`` shows, if it can be read in place; else None.

    Candidates: ``metadata["source"]`` (set by this plugin's reader to the array path) and
    ``layer.source.path``. The array must open as affinities and match the layer's shape
    and dtype (a layer whose data was replaced is not read from its old file).
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
        if not path.is_dir() or not any(p.endswith((".zarr", ".zarr/")) for p in path.parts):
            continue
        try:
            affinities = open_affinities(path)
        except Exception:  # not an affinities array (a container, OME group, N5, ...)
            continue
        if tuple(affinities.array.shape) == tuple(data.shape) and np.dtype(
            affinities.array.dtype
        ) == np.dtype(data.dtype):
            return affinities.path
    return None


def default_output(layer) -> Path:
    """``<container>.zarr/labels_mws`` beside zarr input, else a container in the data dir."""
    from ..storage import split_path

    source = zarr_source(layer)
    if source is not None:
        container, _ = split_path(source, "affinities")
        return container / DEFAULT_OUTPUT_NAME
    return data_dir() / "runs" / f"{safe_name(layer.name)}.zarr" / DEFAULT_OUTPUT_NAME



def _integral(values) -> tuple[int, ...] | None:
    values = [float(v) for v in values]
    if all(v == int(v) for v in values):
        return tuple(int(v) for v in values)
    return None


def world_geometry(layer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(voxel size, offset) for funlib metadata: the layer's scale and translate when they are
    integers (funlib's Coordinate is integral), else unit voxels at the origin. The result
    layer is always placed with the affinities layer's own scale and translate."""
    spatial = level0(layer).ndim - 1
    scale = _integral(layer.scale[1:])
    translate = _integral(layer.translate[1:])
    if scale is None or translate is None or any(s <= 0 for s in scale) or any(
        t % s for t, s in zip(translate, scale)
    ):
        return (1,) * spatial, (0,) * spatial
    return scale, translate



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
    layer_name: str
    placement: dict  # scale, translate, units of the result layer (the affinities' spatial)
    parameters: WatershedParameters
    workers: int
    block_size: tuple[int, ...]
    output: Path
    source: Path | None  # zarr array read in place, or None: an in-memory layer to copy
    shape: tuple[int, ...]
    voxel_size: tuple[int, ...] = ()
    offset: tuple[int, ...] = ()
    input_path: Path | None = None
    token: str | None = None
    copy_current: bool = False
    overwrite: bool = False
    data: Any = None
