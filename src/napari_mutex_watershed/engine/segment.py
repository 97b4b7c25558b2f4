"""``segment()``: one mutex watershed over an in-memory array."""

from __future__ import annotations

import time
import warnings

import mwatershed
import numpy as np

from ..errors import InvalidInputError, KernelError, UsageError, checked_arguments
from ..parameters import MANY_SEEDS, WatershedParameters, as_parameters, default_offsets
from .labels import finalize
from .weights import edge_slices, edge_weights


def run_kernel(
    weights: np.ndarray,
    parameters: WatershedParameters,
    seeds: np.ndarray | None = None,
) -> np.ndarray:
    """mwatershed.agglom with its panics turned into KernelError; returns raw uint64 labels.

    With seeds, seeded segments carry their seed id and every other segment an id above the
    largest seed id, so the two never collide (mwatershed itself names unseeded segments by a
    flat voxel index, which can equal a seed id).
    """
    n_voxels = int(np.prod(weights.shape[1:]))
    kernel_seeds = None if seeds is None else _kernel_seeds(seeds, n_voxels)
    weights, parameters = _offsets_that_fit(weights, parameters)
    if not len(weights):  # no edge fits in so small an array: every voxel stays alone
        raw = (np.zeros(weights.shape[1:], np.uint64) if kernel_seeds is None
               else kernel_seeds.copy())
    else:
        try:
            raw = mwatershed.agglom(
                weights,
                [list(o) for o in parameters.offsets],
                seeds=kernel_seeds,
                strides=parameters.kernel_strides(),
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as error:  # pyo3 PanicException derives from BaseException
            raise KernelError(f"mwatershed failed: {error}") from None
    _restore_segment_of_first_voxel(raw, weights, parameters)
    if seeds is not None:
        _restore_seed_ids(raw, seeds, n_voxels)
    return raw


def _offsets_that_fit(weights: np.ndarray, parameters: WatershedParameters):
    """Drop the channels of offsets as long as the array along some axis (a small crop or
    block): they have no edge in it, and mwatershed panics on them."""
    spatial = weights.shape[1:]
    fits = [all(abs(o) < n for o, n in zip(offset, spatial)) for offset in parameters.offsets]
    if all(fits):
        return weights, parameters
    kept = [o for o, f in zip(parameters.offsets, fits) if f]
    # bypass validation: an empty offset list is fine here, and nothing else reads it
    return weights[np.array(fits)], parameters.model_construct(
        **{**dict(parameters), "offsets": kept})


def _kernel_seeds(seeds: np.ndarray, n_voxels: int) -> np.ndarray:
    """Seeds shifted above every flat voxel index (and above the id of voxel 0's segment)."""
    seeds = np.asarray(seeds, dtype=np.uint64)
    max_seed = int(seeds.max()) if seeds.size else 0
    if max_seed + n_voxels + 1 > np.iinfo(np.uint64).max:
        raise InvalidInputError(
            f"seed ids must stay below 2**64 - {n_voxels + 1} (the number of voxels), "
            f"got {max_seed}"
        )
    return np.where(seeds > 0, seeds + np.uint64(n_voxels), np.uint64(0))


def _restore_seed_ids(raw: np.ndarray, seeds: np.ndarray, n_voxels: int) -> None:
    """Undo the shift of ``_kernel_seeds``; move unseeded ids above the largest seed id."""
    max_seed = np.uint64(seeds.max()) if seeds.size else np.uint64(0)
    n = np.uint64(n_voxels)
    seeded = raw > n
    unseeded = (raw > 0) & ~seeded
    raw[seeded] -= n
    raw[unseeded] += max_seed + np.uint64(1)


def _restore_segment_of_first_voxel(raw, weights, parameters) -> None:
    """Give the segment whose representative is voxel 0 a real id.

    mwatershed names a segment by the flat index of its representative, so that segment comes
    out as 0, like voxels without any attractive edge. Its members are exactly the 0-labelled
    voxels that have an attractive edge among the edges the kernel used (strides skip some).
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
    strides = parameters.kernel_strides() or [None] * len(parameters.offsets)
    attracted = np.zeros(spatial, bool)
    for channel, offset, stride in zip(weights, parameters.offsets, strides):
        source, target = edge_slices(offset, spatial)
        if stride is not None:  # the kernel takes every stride-th edge from each slice start
            source = tuple(slice(s.start, s.stop, k) for s, k in zip(source, stride))
            target = tuple(slice(t.start, t.stop, k) for t, k in zip(target, stride))
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
    ids = np.unique(seeds)
    n_seeds = int(np.count_nonzero(ids))
    if n_seeds > MANY_SEEDS:
        warnings.warn(
            f"{n_seeds} distinct seed ids: mwatershed adds a mutex edge between every pair of "
            "seeds, so this will be slow (cost grows with the square of the seed count)",
            stacklevel=3,
        )
    return seeds.astype(np.uint64, copy=False)


@checked_arguments
def segment(
    affinities,
    parameters: WatershedParameters | None = None,
    mask: np.ndarray | None = None,
    seeds: np.ndarray | None = None,
    *,
    timings: dict | None = None,
) -> np.ndarray:
    """Segment affinities ((C, Y, X) or (C, Z, Y, X); numpy, zarr or dask) into labels.

    ``parameters`` may be a dict of WatershedParameters' fields. Returns consecutive ids
    1..N with 0 = background (uint32 where N fits); seeded ids are kept. Raises
    InvalidInputError for bad input, UsageError for a wrong call and KernelError if
    mwatershed fails. ``timings``, if given, receives the seconds of each stage ("weights",
    "kernel", "finalize"): the preview reports where its time goes.
    """
    started = time.perf_counter()
    if not (hasattr(affinities, "shape") and hasattr(affinities, "dtype")):
        raise UsageError(
            "affinities must be an array (numpy, zarr or dask) of shape (channels, [z,] y, x), "
            f"got {type(affinities).__name__}")
    spatial = tuple(affinities.shape[1:])
    parameters = as_parameters(parameters, offsets=default_offsets(len(spatial)))
    if seeds is not None:
        seeds = _check_seeds(seeds, spatial)
    weights, nn_mean = edge_weights(
        affinities, parameters, mask=mask, keep_nn_mean=parameters.threshold > 0
    )
    weighted = time.perf_counter()
    raw = run_kernel(weights, parameters, seeds)
    del weights
    segmented = time.perf_counter()
    if mask is not None:
        raw[~np.asarray(mask, dtype=bool)] = 0
    labels = finalize(raw, parameters.min_size, parameters.threshold, nn_mean, seeds)
    if timings is not None:
        timings.update(weights=weighted - started, kernel=segmented - weighted,
                       finalize=time.perf_counter() - segmented)
    return labels
