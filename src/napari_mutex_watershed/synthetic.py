"""Procedural sample data: touching cells with membranes, and noisy affinities from them.

One generator backs the CLI's ``sample`` command, napari's File > Open Sample and the test
fixtures, so what users try is what the tests check.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage import measure

from .parameters import default_offsets

#: The largest sample ``write_sample`` makes: it is built in memory (about 70 bytes a voxel
#: at its peak, 0.49 GB at 64 x 256 x 256, so 2**27 voxels take about 9 GB).
MAX_SAMPLE_VOXELS = 2**27
#: The cells' size in voxels; halved for a volume that would otherwise hold fewer than two.
CELL_SIZE = 16.0


def cell_labels(
    shape: tuple[int, ...], cell_size: float = CELL_SIZE, membrane: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Ground-truth cells (uint32, 0 = membrane) from a warped Voronoi tessellation."""
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    n_cells = max(2, int(np.prod(shape) / cell_size**ndim))
    centres = rng.uniform(0, 1, (n_cells, ndim)) * np.array(shape)
    # smooth random warp: curved, irregular membranes instead of flat Voronoi faces
    warp = np.empty((ndim,) + tuple(shape), np.float32)
    for axis in range(ndim):
        ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), cell_size / 2,
                                output=warp[axis])
    warp *= cell_size * 0.15 / (warp.std() + 1e-9)
    tree = cKDTree(centres)
    labels = np.empty(shape, np.uint32)
    # slabs along the first axis: querying every voxel at once took about 100 bytes per
    # voxel (points, float64 distances, int64 neighbours): over 24 GB at 1024 x 512 x 512
    step = max(1, 2**22 // int(np.prod(shape[1:])))
    for start in range(0, shape[0], step):
        stop = min(start + step, shape[0])
        grid = np.indices((stop - start,) + tuple(shape[1:]), dtype=np.float32)
        grid[0] += start
        points = (grid + warp[:, start:stop]).reshape(ndim, -1).T
        distances, nearest = tree.query(points, k=2, workers=-1)
        slab = (nearest[:, 0] + 1).astype(np.uint32)
        slab[(distances[:, 1] - distances[:, 0]) < membrane] = 0
        labels[start:stop] = slab.reshape(labels[start:stop].shape)
    del warp
    # one connected piece per id, so the ground truth is what a segmentation can recover
    pieces = measure.label(labels, background=0, connectivity=1)
    del labels
    sizes = np.bincount(pieces.ravel())
    sizes[0] = 0
    pieces[(sizes < min(sizes.max(), cell_size**ndim / 8))[pieces]] = 0
    # consecutive ids in the order of the pieces (a table, not np.unique: no sort of the volume)
    present = np.bincount(pieces.ravel(), minlength=len(sizes)) > 0
    consecutive = (np.cumsum(present) - 1).astype(np.uint32)
    return consecutive[pieces]


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
    as_uint8 = np.dtype(dtype) == np.uint8
    affs = np.empty((len(offsets),) + labels.shape, np.uint8 if as_uint8 else np.float32)
    channel = np.empty(labels.shape, np.float32)  # one channel at a time bounds the memory
    for out, offset in zip(affs, offsets):
        channel[...] = 0
        source, target = edge_slices(offset, labels.shape)
        channel[source] = (labels[source] == labels[target]) & (labels[source] != 0)
        if sigma > 0:
            ndimage.gaussian_filter(channel, sigma, output=channel)
        if noise > 0:
            channel += rng.normal(0, noise, labels.shape).astype(np.float32)
        np.clip(channel, 0, 1, out=channel)
        if as_uint8:
            channel *= 255
            np.round(channel, out=channel)
        out[...] = channel
    return affs if as_uint8 else affs.astype(dtype, copy=False)


def sample_volume(
    shape: tuple[int, ...] = (64, 128, 128),
    seed: int = 0,
    noise: float = 0.1,
    dtype=np.float32,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, ...]]]:
    """(affinities, ground-truth labels, offsets) for a 2D or 3D shape."""
    offsets = default_offsets(len(shape))
    cell_size = CELL_SIZE
    labels = cell_labels(shape, cell_size, seed=seed)
    while labels.max() < 2 and cell_size > 2:  # a few voxels a side: smaller cells
        cell_size /= 2
        labels = cell_labels(shape, cell_size, seed=seed)
    affs = affinities_from_labels(labels, offsets, noise=noise, seed=seed + 1, dtype=dtype)
    return affs, labels, offsets


def write_sample(container, shape=(64, 128, 128), seed: int = 0, noise: float = 0.1,
                 dtype=np.float32, overwrite: bool = False) -> dict:
    """Write sample affinities and their ground truth into ``container``; return paths and
    what was written. ``overwrite`` replaces only an earlier sample (marked as ours)."""
    from .attributes import SAMPLE_ATTR
    from .errors import InvalidInputError, OutputExistsError, UnsafeOutputError
    from .safety import is_empty_folder, is_ours
    from .storage import write_affinities, write_labels
    from .storage.paths import update_attributes

    if len(shape) not in (2, 3):
        raise InvalidInputError("a sample has 2 or 3 axes")
    if math.prod(shape) > MAX_SAMPLE_VOXELS:
        raise InvalidInputError(
            f"a sample is made in memory: at most 2**{MAX_SAMPLE_VOXELS.bit_length() - 1} "
            f"voxels (e.g. 512 x 512 x 512), got {' x '.join(map(str, shape))}")
    targets = {"affinities": Path(container) / "affinities",
               "ground_truth": Path(container) / "ground_truth"}
    # all checked before anything is written, what is never replaced first
    occupied = [t for t in targets.values()  # (an empty folder holds nothing to lose)
                if t.is_symlink() or t.exists() and not is_empty_folder(t)]
    for target in occupied:
        if target.is_symlink():
            raise UnsafeOutputError(f"{target} is a link, which `sample` never replaces: "
                                    "write the sample into another container")
        if not is_ours(target, SAMPLE_ATTR):
            raise UnsafeOutputError(
                f"{target} exists and is not sample data, the only thing `sample` replaces: "
                "write the sample into another container")
    if occupied and not overwrite:
        raise OutputExistsError(f"{occupied[0]} already exists (an earlier sample); pass "
                                "--overwrite to replace it")
    affinities, labels, offsets = sample_volume(tuple(shape), seed, noise, dtype)
    paths = {
        "affinities": write_affinities(targets["affinities"], affinities, offsets,
                                       overwrite=True),  # (checked above)
        "ground_truth": write_labels(targets["ground_truth"], labels, overwrite=True,
                                     attributes={SAMPLE_ATTR: True}),
    }
    update_attributes(paths["affinities"], {SAMPLE_ATTR: True})
    return {**paths, "shape": affinities.shape, "offsets": offsets,
            "objects": int(labels.max())}
