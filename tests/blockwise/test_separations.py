"""Separations a block made deep inside it, and the cuts they force on the stitched joins."""

import numpy as np

from napari_mutex_watershed.blockwise.fragments import (
    SEPARATION_MARGIN,
    face_fragments,
    pairs_between,
    separated_pairs,
    touching_pairs,
)
from napari_mutex_watershed.blockwise.stitch import cut_separations

M = SEPARATION_MARGIN


def pairs(array) -> set:
    return set(zip(*(a.tolist() for a in array)))


def test_only_separations_away_from_inner_faces_count():
    local = np.zeros((1, 4 * M), np.uint32)
    local[0, :M // 2] = 1          # 1|2 touch M/2 from the face below
    local[0, M // 2 : 2 * M] = 2   # 2|3 touch 2M from it: deep inside
    local[0, 2 * M :] = 3
    below_and_above = ((False, False), (True, True))
    assert pairs(separated_pairs(local, below_and_above)) == {(2, 3)}
    # at the volume's edge there is no neighbour, and a block sees as much as a whole run
    assert pairs(separated_pairs(local, ((False, False), (False, False)))) == {(1, 2), (2, 3)}


def test_a_block_thinner_than_twice_the_margin_trusts_nothing():
    local = np.arange(1, 2 * M).reshape(1, -1).astype(np.uint32)
    assert separated_pairs(local, ((False, False), (True, True))).shape == (2, 0)


def test_background_and_one_fragment_are_no_separation():
    local = np.zeros((3 * M, 3 * M), np.uint32)
    local[:, M:] = 5
    assert separated_pairs(local, ((False, False), (False, False))).shape == (2, 0)


def test_adjacent_pairs_are_linked_by_any_offset():
    local = np.zeros((1, 30), np.uint32)
    local[0, :4], local[0, 6:10], local[0, 10:20], local[0, 20:] = 1, 2, 3, 4
    # 1 and 2 do not touch, but an edge of offset 5 links them; 1 and 3 are 7 apart
    assert pairs(touching_pairs(local, [(0, 1), (0, 5)])) == {(1, 2), (2, 3), (3, 4)}
    assert pairs(touching_pairs(local, [(0, 1)])) == {(2, 3), (3, 4)}


def test_only_pairs_of_fragments_at_a_face_are_kept():
    local = np.zeros((1, 30), np.uint32)
    local[0, :4], local[0, 6:10], local[0, 10:20], local[0, 20:] = 1, 2, 3, 4
    all_pairs = touching_pairs(local, [(0, 1), (0, 5)])
    below = ((False, False), (True, False))  # a block below along the second axis only
    # 3 starts 10 voxels from that face, 4 20 voxels
    assert face_fragments(local, below, (0, 8)).tolist() == [False, True, True, False, False]
    assert pairs(pairs_between(all_pairs, face_fragments(local, below, (0, 12)))) == {
        (1, 2), (2, 3)}
    assert pairs(pairs_between(all_pairs, face_fragments(local, below, (0, 25)))) == {
        (1, 2), (2, 3), (3, 4)}
    alone = ((False, False), (False, False))  # no neighbour: nothing can be matched
    assert not face_fragments(local, alone, (0, 12)).any()


def test_weakest_join_between_separated_fragments_is_cut():
    # x1 -50- x2 -5- f -40- y2 -60- y1, and a block saw x1 and y1 apart
    u, v = np.array([1, 2, 3, 4]), np.array([2, 3, 4, 5])
    overlap = np.array([50.0, 5.0, 40.0, 60.0])
    keep = cut_separations(6, u, v, overlap, np.array([1]), np.array([5]))
    assert keep.tolist() == [True, False, True, True]


def test_joins_are_kept_without_a_violated_separation():
    u, v = np.array([1, 2, 4]), np.array([2, 3, 5])
    overlap = np.ones(3)
    # (1, 4) are separated but in different segments anyway; (2, 2) is no pair at all
    keep = cut_separations(6, u, v, overlap, np.array([1, 3]), np.array([4, 5]))
    assert keep.all()


def test_every_separation_in_a_component_is_honoured():
    # a star: fragment 0 joined to 1..4; blocks saw 1|2 and 3|4 apart
    u, v = np.zeros(4, np.int64), np.arange(1, 5)
    overlap = np.array([10.0, 3.0, 8.0, 2.0])
    keep = cut_separations(5, u, v, overlap, np.array([1, 3]), np.array([2, 4]))
    assert keep.tolist() == [True, False, True, False]
