"""The stitching rules on hand-made overlaps."""

import numpy as np

from napari_mutex_watershed.blockwise.matching import (
    CONTAINED,
    MAJORITY,
    MIN_CONTAINED_OVERLAP,
    candidate_pairs,
)
from napari_mutex_watershed.blockwise.stitch import (
    agreed_pairs,
    components,
    join_contained,
)


def found(ours, theirs) -> dict:
    """{(ours, theirs): (overlap, kind)}"""
    u, v, overlap, kind = candidate_pairs(np.array(ours), np.array(theirs))
    return {(a, b): (n, k) for a, b, n, k in zip(*(x.tolist() for x in (u, v, overlap, kind)))}


def test_one_to_one_overlap_is_a_majority_pair():
    assert found([[1, 1, 2, 2]], [[7, 7, 8, 8]]) == {(1, 7): (2, MAJORITY), (2, 8): (2, MAJORITY)}


def test_touching_objects_share_no_voxels_and_are_not_paired():
    assert found([[1, 1, 0, 0]], [[0, 0, 8, 8]]) == {}


def test_a_merged_label_is_the_majority_pair_of_its_largest_overlap_only():
    # our label 1 covers their 7 and 8: only (1, 7) is a majority pair; 8 is too small to
    # count as contained
    assert found([[1, 1, 1, 1, 1, 1]], [[7, 7, 7, 7, 8, 8]]) == {(1, 7): (4, MAJORITY)}


def test_small_overlap_is_not_enough():
    pairs = found([[1] * 10 + [2] * 10], [[5] * 9 + [6] * 11])
    assert {p for p, (_, kind) in pairs.items() if kind & MAJORITY} == {(1, 5), (2, 6)}
    # each other's only overlap, but 2 of 5's 20 voxels
    assert found([[1, 1] + [0] * 18], [[5] * 20]) == {}


def test_a_branch_contained_in_one_label_is_a_contained_pair():
    # their 7 is the trunk, their 8 a branch; our 1 holds both across the face
    n = MIN_CONTAINED_OVERLAP
    pairs = found([[1] * (3 * n)], [[7] * (2 * n) + [8] * n])
    assert pairs == {(1, 7): (2 * n, MAJORITY | CONTAINED), (1, 8): (n, CONTAINED)}
    # a speck is never paired
    pairs = found([[1] * (3 * n)], [[7] * (3 * n - 2) + [8] * 2])
    assert set(pairs) == {(1, 7)}


def test_only_pairs_both_blocks_found_are_joined():
    u = np.array([10, 20, 30, 50, 60], np.uint64)
    v = np.array([20, 10, 40, 60, 50], np.uint64)  # (30, 40) is seen from one side only
    overlap = np.array([5, 7, 9, 20, 30], np.uint64)
    kind = np.array([MAJORITY, MAJORITY | CONTAINED, MAJORITY, CONTAINED, CONTAINED], np.uint64)
    (a, b, summed), (ca, cb, c_summed) = agreed_pairs(u, v, overlap, kind)
    assert list(zip(a.tolist(), b.tolist(), summed.tolist())) == [(10, 20, 12)]
    assert list(zip(ca.tolist(), cb.tolist(), c_summed.tolist())) == [(50, 60, 50)]


def adjacent(a, b):
    """A loader of the adjacent pairs (a, b), as the stitch step reads them from the blocks."""
    pairs = np.array([a, b], np.int64).reshape(2, -1)
    return lambda wanted: pairs[:, wanted(*pairs)]


def test_contained_pairs_do_not_join_what_a_block_kept_apart():
    # joins: 0-1. Contained pairs: 2 into 1 (overlap 30) and 3 into 1 (overlap 20);
    # 2 and 3 touch in their own block, which kept them apart: only the larger one is joined
    segment = components(4, np.array([0]), np.array([1]))
    cu, cv = np.array([1, 1]), np.array([2, 3])
    joined = join_contained(segment, cu, cv, np.array([20.0, 30.0]), adjacent([2], [3]))
    assert joined.tolist() == [False, True]
    # without that separation both are joined
    joined = join_contained(segment, cu, cv, np.array([20.0, 30.0]), adjacent([], []))
    assert joined.tolist() == [True, True]


def test_a_separation_inside_a_joined_segment_blocks_a_contained_pair():
    # 0-1 joined; 1 touches 4 in a block that kept them apart; contained pair 0 into 4
    segment = components(5, np.array([0]), np.array([1]))
    joined = join_contained(segment, np.array([0]), np.array([4]), np.array([50.0]),
                            adjacent([1], [4]))
    assert joined.tolist() == [False]
