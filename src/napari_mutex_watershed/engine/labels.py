"""Turning raw kernel labels into the labels users get: filtered and consecutive."""

from __future__ import annotations

import numpy as np

UINT32_MAX = np.iinfo(np.uint32).max


def smallest_label_dtype(max_id: int) -> np.dtype:
    """uint32 where the ids fit (what napari and most viewers handle best), else uint64."""
    return np.dtype(np.uint32) if max_id <= UINT32_MAX else np.dtype(np.uint64)


def segment_keep_mask(
    counts: np.ndarray,
    min_size: int,
    threshold: float,
    nn_sums: np.ndarray | None,
) -> np.ndarray:
    """Which segment ids (indices of ``counts``) survive the size and affinity filters."""
    keep = counts >= max(min_size, 1)
    if threshold > 0 and nn_sums is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = nn_sums / counts
        keep &= mean >= threshold
    return keep


def finalize(
    raw: np.ndarray,
    min_size: int = 0,
    threshold: float = 0.0,
    nn_mean: np.ndarray | None = None,
    seeds: np.ndarray | None = None,
) -> np.ndarray:
    """Filter segments and give them consecutive ids 1..N (0 = background).

    Without seeds, kernel labels are flat voxel indices (< number of voxels), so a
    bincount-sized lookup table relabels in linear time. Seeded ids are arbitrary; they are
    kept as given and the other segments are numbered after the largest seed id.
    """
    if seeds is not None:
        return _finalize_seeded(raw, min_size, threshold, nn_mean, seeds)
    flat = raw.reshape(-1).view(np.int64)
    counts = np.bincount(flat)
    nn_sums = np.bincount(flat, weights=nn_mean.reshape(-1)) if threshold > 0 else None
    keep = segment_keep_mask(counts, min_size, threshold, nn_sums)
    keep[0] = False
    lut = np.cumsum(keep, dtype=np.int64)
    dtype = smallest_label_dtype(int(lut[-1]) if lut.size else 0)
    lut = np.where(keep, lut, 0).astype(dtype)
    return lut.take(raw)  # half the time of lut[raw] on a block's labels


def _finalize_seeded(raw, min_size, threshold, nn_mean, seeds) -> np.ndarray:
    ids, inverse = np.unique(raw, return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.bincount(inverse)
    nn_sums = np.bincount(inverse, weights=nn_mean.reshape(-1)) if threshold > 0 else None
    keep = segment_keep_mask(counts, min_size, threshold, nn_sums)
    seed_ids = np.unique(seeds)
    seed_ids = seed_ids[seed_ids != 0]
    is_seed = np.isin(ids, seed_ids)
    keep |= is_seed
    keep &= ids != 0
    first_free = int(seed_ids.max()) + 1 if seed_ids.size else 1
    new_ids = np.zeros(ids.shape, np.uint64)
    new_ids[is_seed] = ids[is_seed]
    others = keep & ~is_seed
    new_ids[others] = first_free + np.arange(int(others.sum()), dtype=np.uint64)
    dtype = smallest_label_dtype(int(new_ids.max()) if new_ids.size else 0)
    return new_ids.astype(dtype)[inverse].reshape(raw.shape)
