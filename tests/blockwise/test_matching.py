"""The stitching rule on hand-made overlaps."""

import numpy as np

from napari_mutex_watershed.blockwise.matching import majority_pairs
from napari_mutex_watershed.blockwise.stitch import agreed_pairs


def test_one_to_one_overlap_is_a_pair():
    ours = np.array([[1, 1, 2, 2]])
    theirs = np.array([[7, 7, 8, 8]])
    u, v, overlap = majority_pairs(ours, theirs)
    assert sorted(zip(u.tolist(), v.tolist(), overlap.tolist())) == [(1, 7, 2), (2, 8, 2)]


def test_touching_objects_share_no_voxels_and_are_not_paired():
    ours = np.array([[1, 1, 0, 0]])
    theirs = np.array([[0, 0, 8, 8]])
    assert len(majority_pairs(ours, theirs)[0]) == 0


def test_a_merged_label_pairs_with_its_largest_overlap_only():
    # our label 1 covers their 7 and 8: it must not pull 7 and 8 together
    ours = np.array([[1, 1, 1, 1, 1, 1]])
    theirs = np.array([[7, 7, 7, 7, 8, 8]])
    u, v, _ = majority_pairs(ours, theirs)
    assert list(zip(u.tolist(), v.tolist())) == [(1, 7)]


def test_small_overlap_is_not_enough():
    ours = np.array([[1] * 10 + [2] * 10])
    theirs = np.array([[5] * 9 + [6] * 11])  # 5 is our 1's best, 1 is 5's best: paired
    pairs = set(zip(*(a.tolist() for a in majority_pairs(ours, theirs)[:2])))
    assert pairs == {(1, 5), (2, 6)}
    ours = np.array([[1, 1] + [0] * 18])
    theirs = np.array([[5] * 20])  # each other's only overlap, but 2 of 5's 20 voxels
    assert len(majority_pairs(ours, theirs)[0]) == 0


def test_only_pairs_both_blocks_found_are_joined():
    u = np.array([10, 20, 30], np.uint64)
    v = np.array([20, 10, 40], np.uint64)  # (10, 20) seen from both sides, (30, 40) from one
    overlap = np.array([5, 7, 9], np.uint64)
    a, b, summed = agreed_pairs(u, v, overlap)
    assert list(zip(a.tolist(), b.tolist(), summed.tolist())) == [(10, 20, 12)]
