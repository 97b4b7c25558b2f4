"""finalize(): from raw kernel labels (flat voxel indices) to consecutive, filtered ids."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mutex_watershed.engine import finalize, smallest_label_dtype
from napari_mutex_watershed.engine.labels import segment_keep_mask


def raw_labels() -> np.ndarray:
    """Like mwatershed output: ids are flat indices of a representative, 0 = background."""
    raw = np.zeros((4, 5), np.uint64)
    raw[0, :3] = 17  # 3 voxels
    raw[1:, :2] = 3  # 6 voxels
    raw[3, 4] = 19  # 1 voxel
    raw[2:, 3] = 11  # 2 voxels
    return raw


def test_smallest_label_dtype():
    assert smallest_label_dtype(0) == np.uint32
    assert smallest_label_dtype(2**32 - 1) == np.uint32
    assert smallest_label_dtype(2**32) == np.uint64


def test_consecutive_in_order_of_raw_id():
    labels = finalize(raw_labels())
    assert labels.dtype == np.uint32
    expected = np.zeros((4, 5), np.uint32)
    expected[1:, :2] = 1  # raw 3
    expected[2:, 3] = 2  # raw 11
    expected[0, :3] = 3  # raw 17
    expected[3, 4] = 4  # raw 19
    np.testing.assert_array_equal(labels, expected)


def test_min_size_removes_small_and_renumbers():
    labels = finalize(raw_labels(), min_size=3)
    expected = np.zeros((4, 5), np.uint32)
    expected[1:, :2] = 1
    expected[0, :3] = 2
    np.testing.assert_array_equal(labels, expected)


def test_threshold_uses_mean_of_per_voxel_values():
    raw = raw_labels()
    nn_mean = np.full(raw.shape, 0.75, np.float32)  # exact in binary: no rounding below
    nn_mean[0, 0] = 0.0  # segment 17: mean (0 + 0.75 + 0.75) / 3 = 0.5
    nn_mean[2:, 3] = 0.25  # segment 11: 0.25
    labels = finalize(raw, threshold=0.5, nn_mean=nn_mean)
    assert labels[2, 3] == 0, "0.25 < 0.5 is removed"
    assert labels[0, 0] != 0, "0.5 >= 0.5 is kept"
    assert labels.max() == 3
    assert finalize(raw, threshold=0.5001, nn_mean=nn_mean)[0, 0] == 0


def test_threshold_and_min_size_combine():
    raw = raw_labels()
    nn_mean = np.full(raw.shape, 0.9, np.float32)
    nn_mean[1:, :2] = 0.1
    labels = finalize(raw, min_size=2, threshold=0.5, nn_mean=nn_mean)
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2]
    assert labels[1, 0] == 0 and labels[3, 4] == 0


def test_segment_keep_mask_never_keeps_empty_ids():
    counts = np.array([5, 0, 3, 1])
    keep = segment_keep_mask(counts, min_size=0, threshold=0.0, nn_sums=None)
    assert keep.tolist() == [True, False, True, True]


def test_all_background():
    labels = finalize(np.zeros((3, 3, 3), np.uint64))
    assert labels.dtype == np.uint32 and not labels.any()


def test_seeded_ids_are_kept_and_others_follow():
    raw = raw_labels()
    seeds = np.zeros(raw.shape, np.uint64)
    # after the kernel, seeded segments carry their seed id
    raw[raw == 19] = 500
    seeds[3, 4] = 500
    raw[raw == 3] = 2
    seeds[1, 0] = 2
    labels = finalize(raw, min_size=2, seeds=seeds)
    assert labels[3, 4] == 500, "seeded segments survive min_size"
    assert labels[1, 0] == 2
    others = np.setdiff1d(np.unique(labels), [0, 2, 500])
    np.testing.assert_array_equal(others, [501, 502])
    assert labels.dtype == np.uint32


def test_seeded_large_ids_give_uint64():
    raw = np.zeros((2, 2), np.uint64)
    raw[0] = 2**40
    raw[1, 0] = 7
    seeds = np.zeros_like(raw)
    seeds[0, 0] = 2**40
    labels = finalize(raw, seeds=seeds)
    assert labels.dtype == np.uint64
    assert labels.tolist() == [[2**40, 2**40], [2**40 + 1, 0]]


@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 4)])
def test_shape_is_preserved(shape):
    raw = np.arange(np.prod(shape), dtype=np.uint64).reshape(shape)
    labels = finalize(raw)
    assert labels.shape == shape
    assert labels.max() == np.prod(shape) - 1  # every nonzero voxel is its own segment
