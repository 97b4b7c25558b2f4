"""Procedural sample data: touching cells with membranes, and noisy affinities from them.

One generator backs the CLI's ``sample`` command, napari's File > Open Sample and the test
fixtures, so what users try is what the tests check.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage import measure

from .parameters import OFFSETS_2D, OFFSETS_3D


def cell_labels(
    shape: tuple[int, ...], cell_size: float = 16.0, membrane: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Ground-truth cells (uint32, 0 = membrane) from a warped Voronoi tessellation."""
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    n_cells = max(2, int(np.prod(shape) / cell_size**ndim))
    centres = rng.uniform(0, 1, (n_cells, ndim)) * np.array(shape)
    grid = np.indices(shape, dtype=np.float32).reshape(ndim, -1).T
    # smooth random warp: curved, irregular membranes instead of flat Voronoi faces
    warp = np.stack(
        [ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), cell_size / 2)
         for _ in range(ndim)]
    ).reshape(ndim, -1).T
    warp *= cell_size * 0.15 / (warp.std() + 1e-9)
    distances, nearest = cKDTree(centres).query(grid + warp, k=2, workers=-1)
    labels = (nearest[:, 0] + 1).astype(np.uint32)
    labels[(distances[:, 1] - distances[:, 0]) < membrane] = 0
    # one connected piece per id, so the ground truth is what a segmentation can recover
    pieces = measure.label(labels.reshape(shape), background=0, connectivity=1)
    sizes = np.bincount(pieces.ravel())
    sizes[0] = 0
    pieces[sizes[pieces] < min(sizes.max(), cell_size**ndim / 8)] = 0
    _, consecutive = np.unique(pieces, return_inverse=True)
    return consecutive.reshape(shape).astype(np.uint32)


def affinities_from_labels(
    labels: np.ndarray,
    offsets,
    sigma: float = 1.0,
    noise: float = 0.1,
    seed: int = 0,
    dtype=np.float32,
) -> np.ndarray:
    """Prediction-like affinities: 1 where p and p + offset share a non-zero label, blurred,
    with Gaussian noise, clipped to [0, 1]. uint8 output is scaled to 0..255."""
    from .engine.weights import edge_slices

    rng = np.random.default_rng(seed)
    affs = np.zeros((len(offsets),) + labels.shape, np.float32)
    for channel, offset in zip(affs, offsets):
        source, target = edge_slices(offset, labels.shape)
        channel[source] = (labels[source] == labels[target]) & (labels[source] != 0)
        if sigma > 0:
            ndimage.gaussian_filter(channel, sigma, output=channel)
        if noise > 0:
            channel += rng.normal(0, noise, labels.shape).astype(np.float32)
    np.clip(affs, 0, 1, out=affs)
    if np.dtype(dtype) == np.uint8:
        return np.round(affs * 255).astype(np.uint8)
    return affs.astype(dtype, copy=False)


def sample_volume(
    shape: tuple[int, ...] = (64, 128, 128),
    seed: int = 0,
    noise: float = 0.1,
    dtype=np.float32,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, ...]]]:
    """(affinities, ground-truth labels, offsets) for a 2D or 3D shape."""
    offsets = list(OFFSETS_3D if len(shape) == 3 else OFFSETS_2D)
    labels = cell_labels(shape, seed=seed)
    affs = affinities_from_labels(labels, offsets, noise=noise, seed=seed + 1, dtype=dtype)
    return affs, labels, offsets
