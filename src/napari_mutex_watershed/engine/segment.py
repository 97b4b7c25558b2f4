"""``segment()``: one mutex watershed over an in-memory array."""

from __future__ import annotations

import warnings

import mwatershed
import numpy as np

from ..errors import InvalidInputError, KernelError
from ..parameters import MANY_SEEDS, WatershedParameters
from .labels import finalize
from .weights import edge_slices, edge_weights


def run_kernel(
    weights: np.ndarray,
    parameters: WatershedParameters,
    seeds: np.ndarray | None = None,
) -> np.ndarray:
    """mwatershed.agglom with its panics turned into KernelError; returns raw uint64 labels."""
    try:
        raw = mwatershed.agglom(
            weights,
            [list(o) for o in parameters.offsets],
            seeds=seeds,
            strides=parameters.kernel_strides(),
        )
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # pyo3 PanicException derives from BaseException
        raise KernelError(f"mwatershed failed: {error}") from None
    if seeds is None:
        _restore_segment_of_first_voxel(raw, weights, parameters)
    return raw


def _restore_segment_of_first_voxel(raw, weights, parameters) -> None:
    """Give the segment whose representative is voxel 0 a real id.

    mwatershed names a segment by the flat index of its representative, so that segment comes
    out as 0, like voxels without any attractive edge. Its members are exactly the 0-labelled
    voxels that have an attractive edge.
    """
    if raw.flat[0] != 0:
        return
    spatial = raw.shape
    origin = tuple(0 for _ in spatial)
    touches_origin = any(
        (channel[origin] > 0) or _incoming_to_origin_attracts(channel, offset)
        for channel, offset in zip(weights, parameters.offsets)
    )
    if not touches_origin:
        return
    attracted = np.zeros(spatial, bool)
    for channel, offset in zip(weights, parameters.offsets):
        source, target = edge_slices(offset, spatial)
        positive = channel[source] > 0
        attracted[source] |= positive
        attracted[target] |= positive
    raw[(raw == 0) & attracted] = raw.size  # larger than any flat index: no collision


def _incoming_to_origin_attracts(channel, offset) -> bool:
    if any(o > 0 for o in offset):  # the edge (-offset -> 0) would start outside the array
        return False
    source = tuple(-o for o in offset)
    return bool(channel[source] > 0) if all(s < n for s, n in zip(source, channel.shape)) else False


def _check_seeds(seeds, spatial) -> np.ndarray:
    seeds = np.asarray(seeds)
    if tuple(seeds.shape) != spatial:
        raise InvalidInputError(f"seeds have shape {tuple(seeds.shape)}, expected {spatial}")
    if not np.issubdtype(seeds.dtype, np.integer):
        raise InvalidInputError(f"seeds must be integer labels, got dtype {seeds.dtype}")
    if np.issubdtype(seeds.dtype, np.signedinteger) and seeds.min() < 0:
        raise InvalidInputError("seeds contain negative ids")
    n_seeds = np.unique(seeds).size - 1
    if n_seeds > MANY_SEEDS:
        warnings.warn(
            f"{n_seeds} distinct seed ids: mwatershed adds a mutex edge between every pair of "
            "seeds, so this will be slow (cost grows with the square of the seed count)",
            stacklevel=3,
        )
    return seeds.astype(np.uint64, copy=False)


def segment(
    affinities,
    parameters: WatershedParameters | None = None,
    mask: np.ndarray | None = None,
    seeds: np.ndarray | None = None,
) -> np.ndarray:
    """Segment affinities ((C, Y, X) or (C, Z, Y, X); numpy, zarr or dask) into labels.

    Returns consecutive ids 1..N with 0 = background (uint32 where N fits); seeded ids are
    kept. Raises InvalidInputError for bad input and KernelError if mwatershed fails.
    """
    parameters = parameters or WatershedParameters()
    spatial = tuple(affinities.shape[1:])
    if seeds is not None:
        seeds = _check_seeds(seeds, spatial)
    weights, nn_mean = edge_weights(
        affinities, parameters, mask=mask, keep_nn_mean=parameters.threshold > 0
    )
    raw = run_kernel(weights, parameters, seeds)
    del weights
    if mask is not None:
        raw[~np.asarray(mask, dtype=bool)] = 0
    return finalize(raw, parameters.min_size, parameters.threshold, nn_mean, seeds)
