"""From affinities as stored to the float64 edge weights mwatershed needs.

Every check happens here, before the kernel: a NaN or a shape mistake inside mwatershed is a
Rust panic, which is a BaseException and reads as gibberish to a user.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError, InvalidValuesError
from ..parameters import WatershedParameters

SUPPORTED_DTYPES = (np.float32, np.float64, np.uint8)
#: What affinities of another dtype are told.
DTYPE_ADVICE = "use float32, float64 (values in [0, 1]) or uint8 (0..255)"


def is_supported_dtype(dtype) -> bool:
    """In either byte order: a big-endian float32 (HDF5's and zarr v2's ``>f4``) is float32."""
    return np.dtype(dtype).newbyteorder("=") in [np.dtype(d) for d in SUPPORTED_DTYPES]


def edge_slices(offset, shape) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices (source, target) selecting every in-bounds edge pair (p, p + offset)."""
    source, target = [], []
    for o, n in zip(offset, shape):
        if o >= 0:
            source.append(slice(0, max(n - o, 0)))
            target.append(slice(min(o, n), n))
        else:
            source.append(slice(min(-o, n), n))
            target.append(slice(0, max(n + o, 0)))
    return tuple(source), tuple(target)


def check_affinities(affinities, parameters: WatershedParameters) -> list[int]:
    """Validate shape and dtype against the parameters; return the channels to use."""
    shape = tuple(affinities.shape)
    ndim = parameters.ndim
    if len(shape) != ndim + 1:
        raise InvalidInputError(
            f"affinities have shape {shape}, but the offsets are {ndim}D: expected "
            f"(channels, {'z, ' if ndim == 3 else ''}y, x)"
        )
    if any(s == 0 for s in shape):
        raise InvalidInputError(f"affinities are empty (shape {shape})")
    if not is_supported_dtype(affinities.dtype):
        raise InvalidInputError(f"affinities have dtype {affinities.dtype}; {DTYPE_ADVICE}")
    n_offsets, n_channels = len(parameters.offsets), shape[0]
    if parameters.channels is not None:
        bad = [c for c in parameters.channels if c >= n_channels]
        if bad:
            raise InvalidInputError(
                f"channels {bad} selected, but the affinities have only {n_channels} channels"
            )
        return list(parameters.channels)
    if n_channels != n_offsets:
        raise InvalidInputError(
            f"affinities have {n_channels} channels but there are {n_offsets} offsets: "
            "give one offset per channel, or select channels explicitly"
        )
    return list(range(n_channels))


def check_values(channel: np.ndarray, index: int) -> None:
    """Float affinities must be finite and in 0..1 (probabilities, not logits): checked per
    channel with a min and a max, located only when something is wrong."""
    lo, hi = channel.min(), channel.max()
    if 0.0 <= lo and hi <= 1.0:  # False for NaN
        return
    bad = ~np.isfinite(channel)
    if bad.any():
        n_nan = int(np.isnan(channel).sum())
        problem = f"affinities contain {n_nan} NaN and {int(bad.sum()) - n_nan} infinite values"
        advice = "replace them (with 0, say) before segmenting: a mask does not skip them"
    else:
        bad = (channel < 0) | (channel > 1)
        problem = f"affinities have {int(bad.sum())} values outside 0..1 (from {lo:g} to {hi:g})"
        advice = "affinities are probabilities: apply a sigmoid to logits, or rescale"
    raise InvalidValuesError(problem, index, np.argwhere(bad)[0], advice)


def nearest_neighbour_mean(weights: np.ndarray, parameters: WatershedParameters) -> np.ndarray:
    """Per voxel, the mean affinity of the in-bounds nearest-neighbour edges touching it
    (outgoing and incoming), as float32.

    Counting both directions gives every voxel at least one edge; with outgoing edges only,
    the far corner voxel had none and pulled its segment's mean towards 0.
    Called on weights before the bias is subtracted, i.e. on affinities.
    """
    spatial = weights.shape[1:]
    total = np.zeros(spatial, np.float32)
    count = np.zeros(spatial, np.uint8)
    for channel, offset, nn in zip(weights, parameters.offsets, parameters.nearest_neighbour):
        if nn:
            source, target = edge_slices(offset, spatial)
            total[source] += channel[source]
            total[target] += channel[source]
            count[source] += 1
            count[target] += 1
    np.divide(total, count, out=total, where=count > 0)
    return total


def _path_leaves_mask(outside: np.ndarray, offset, source) -> np.ndarray | None:
    """For edges (p, p + offset) with p in ``source``: does the straight line between the
    ends pass a voxel outside the mask? None for nearest-neighbour offsets (no inner voxels)."""
    steps = max(abs(int(o)) for o in offset)
    if steps <= 1:
        return None
    crossing = np.zeros(tuple(s.stop - s.start for s in source), bool)
    for k in range(1, steps):
        step = [int(round(k * o / steps)) for o in offset]
        crossing |= outside[tuple(slice(s.start + d, s.stop + d) for s, d in zip(source, step))]
    return crossing


def edge_weights(
    affinities,
    parameters: WatershedParameters,
    mask: np.ndarray | None = None,
    random_state: int | None = None,
    keep_nn_mean: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return float64 weights (affinity - bias) and, if asked, the nearest-neighbour mean.

    Channels are read one at a time so numpy, zarr and dask inputs never need a second full
    copy. ``random_state`` overrides ``parameters.seed`` for randomized strides (blockwise
    runs draw per block).
    """
    channels = check_affinities(affinities, parameters)
    spatial = tuple(affinities.shape[1:])
    if mask is not None and tuple(mask.shape) != spatial:
        raise InvalidInputError(f"mask has shape {tuple(mask.shape)}, expected {spatial}")
    scale = 1.0 / 255.0 if np.dtype(affinities.dtype) == np.uint8 else None

    weights = np.empty((len(channels),) + spatial, dtype=np.float64)
    for i, c in enumerate(channels):
        channel = np.asarray(affinities[c])
        if scale is None:
            check_values(channel, c)
        weights[i] = channel
        if scale is not None:
            weights[i] *= scale
        if parameters.invert:
            np.subtract(1.0, weights[i], out=weights[i])
        if parameters.sigma > 0:
            # imported only when smoothing: scipy.ndimage slows every worker's start-up
            from scipy import ndimage

            ndimage.gaussian_filter(weights[i], parameters.sigma, output=weights[i], mode="nearest")

    nn_mean = nearest_neighbour_mean(weights, parameters) if keep_nn_mean else None

    weights -= parameters.biases().reshape((-1,) + (1,) * len(spatial))

    if mask is not None:
        outside = ~np.asarray(mask, dtype=bool)
        for channel, offset in zip(weights, parameters.offsets):
            channel[outside] = 0.0
            source, target = edge_slices(offset, spatial)
            edges = channel[source]  # a view
            edges[outside[target]] = 0.0
            # a long-range edge must not attract across masked voxels between its ends
            crossing = _path_leaves_mask(outside, offset, source)
            if crossing is not None:
                edges[crossing & (edges > 0)] = 0.0

    if parameters.randomized_strides:
        rng = np.random.default_rng(parameters.seed if random_state is None else random_state)
        keep = 1.0 / float(np.prod(parameters.strides))
        for channel, nn in zip(weights, parameters.nearest_neighbour):
            if not nn:
                channel[rng.random(spatial, dtype=np.float32) >= keep] = 0.0
    return weights, nn_mean
