"""The sample generator behind File > Open Sample, the CLI's sample command and the tests."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import measure

from napari_mutex_watershed.parameters import OFFSETS_2D, OFFSETS_3D
from napari_mutex_watershed.synthetic import affinities_from_labels, cell_labels, sample_volume


@pytest.mark.parametrize("shape", [(96, 96), (24, 48, 48)])
def test_cell_labels_are_consecutive_connected_cells(shape):
    labels = cell_labels(shape)
    assert labels.shape == shape and labels.dtype == np.uint32
    ids = np.unique(labels)
    assert ids[0] == 0 and np.array_equal(ids, np.arange(len(ids)))
    assert len(ids) > 5
    assert 0.02 < (labels == 0).mean() < 0.5, "membranes are thin but present"
    for cell in ids[1:]:
        pieces = measure.label(labels == cell, connectivity=1).max()
        assert pieces == 1, f"cell {cell} is in {pieces} pieces"


def test_cell_labels_reproducible_and_seeded():
    a = cell_labels((40, 40), seed=1)
    assert np.array_equal(a, cell_labels((40, 40), seed=1))
    assert not np.array_equal(a, cell_labels((40, 40), seed=2))


def test_cell_size_controls_number_of_cells():
    small = cell_labels((128, 128), cell_size=10).max()
    large = cell_labels((128, 128), cell_size=30).max()
    assert small > 3 * large


def test_affinities_without_noise_are_exact():
    labels = np.array([[1, 1, 2], [1, 0, 2], [3, 3, 2]], np.uint32)
    offsets = [(1, 0), (0, 1), (0, 2)]
    affs = affinities_from_labels(labels, offsets, sigma=0, noise=0)
    assert affs.dtype == np.float32 and affs.shape == (3, 3, 3)
    np.testing.assert_array_equal(affs[0], [[1, 0, 1], [0, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(affs[1], [[1, 0, 0], [0, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(affs[2], [[0, 0, 0], [0, 0, 0], [0, 0, 0]])


def test_affinities_negative_offsets():
    labels = np.array([[1, 1, 2]], np.uint32)
    affs = affinities_from_labels(labels, [(0, -1)], sigma=0, noise=0)
    np.testing.assert_array_equal(affs[0], [[0, 1, 0]])


def test_affinities_noise_blur_and_range():
    labels = cell_labels((64, 64))
    clean = affinities_from_labels(labels, OFFSETS_2D, sigma=0, noise=0)
    noisy = affinities_from_labels(labels, OFFSETS_2D, sigma=1, noise=0.1, seed=4)
    assert noisy.min() >= 0 and noisy.max() <= 1
    assert 0.02 < np.abs(noisy - clean).mean() < 0.3
    assert np.array_equal(noisy, affinities_from_labels(labels, OFFSETS_2D, noise=0.1, seed=4))


def test_affinities_uint8_scaled():
    labels = cell_labels((32, 32))
    as_float = affinities_from_labels(labels, OFFSETS_2D)
    as_uint8 = affinities_from_labels(labels, OFFSETS_2D, dtype=np.uint8)
    assert as_uint8.dtype == np.uint8 and as_uint8.max() == 255
    np.testing.assert_array_equal(as_uint8, np.round(as_float * 255).astype(np.uint8))


@pytest.mark.parametrize("shape, offsets", [((48, 40), OFFSETS_2D), ((12, 20, 24), OFFSETS_3D)])
def test_sample_volume(shape, offsets):
    affs, labels, got_offsets = sample_volume(shape)
    assert got_offsets == offsets
    assert affs.shape == (len(offsets),) + shape and affs.dtype == np.float32
    assert labels.shape == shape
    # affinities are high inside cells and low at (blurred, one voxel thin) membranes
    inside = affs[0][labels > 0].mean()
    on_membrane = affs[0][labels == 0].mean()
    assert inside > 0.7 and on_membrane < inside - 0.25


@pytest.mark.parametrize("shape", [(4, 4, 4), (8, 8, 8), (3, 3), (6, 10, 10), (1, 8, 8)])
def test_a_sample_a_few_voxels_a_side_still_has_cells(shape):
    """``sample --shape 4 4 4`` wrote no object (cells 16 voxels across do not fit): smaller
    cells, two at least; samples that held two already are unchanged."""
    _, labels, _ = sample_volume(shape)
    assert labels.max() >= 2
    np.testing.assert_array_equal(sample_volume((16, 32, 32))[1], cell_labels((16, 32, 32)))
