"""Separations a block made deep inside it, how strongly they repel, and how the stitch
weighs them against the joins."""

import itertools

import numpy as np
import pytest

from napari_mutex_watershed.blockwise import separations as separations_module
from napari_mutex_watershed.blockwise.even_blocks import SEPARATION_MARGIN
from napari_mutex_watershed.blockwise.separations import face_fragments, separations
from napari_mutex_watershed.blockwise.stitch import (
    SEPARATION_FLOOR,
    SEPARATION_WEIGHT,
    join_fragments,
)

M = SEPARATION_MARGIN


def pairs(array) -> set:
    return set(zip(*(a.tolist() for a in array)))


def separated_pairs(local, inner_faces, margin, wanted=None):
    """The pairs ``separations`` finds over the unit steps, with neutral weights."""
    offsets = [tuple(int(d == a) for d in range(local.ndim)) for a in range(local.ndim)]
    weights = np.zeros((len(offsets),) + local.shape)
    return separations(local, weights, offsets, inner_faces, margin, wanted)[0]


def test_only_separations_away_from_inner_faces_count():
    local = np.zeros((1, 4 * M), np.uint32)
    local[0, :M // 2] = 1          # 1|2 touch M/2 from the face below
    local[0, M // 2 : 2 * M] = 2   # 2|3 touch 2M from it: deep inside
    local[0, 2 * M :] = 3
    below_and_above = ((False, False), (True, True))
    assert pairs(separated_pairs(local, below_and_above, M)) == {(2, 3)}
    # at the volume's edge there is no neighbour, and a block sees as much as a whole run
    assert pairs(separated_pairs(local, ((False, False), (False, False)), M)) == {(1, 2), (2, 3)}


def test_a_block_thinner_than_twice_the_margin_trusts_nothing():
    local = np.arange(1, 2 * M).reshape(1, -1).astype(np.uint32)
    assert separated_pairs(local, ((False, False), (True, True)), M).shape == (2, 0)


def test_background_and_one_fragment_are_no_separation():
    local = np.zeros((3 * M, 3 * M), np.uint32)
    local[:, M:] = 5
    assert separated_pairs(local, ((False, False), (False, False)), M).shape == (2, 0)


def test_pairs_touch_and_every_offset_adds_to_their_strength():
    local = np.zeros((1, 30), np.uint32)
    local[0, :4], local[0, 6:10], local[0, 10:20], local[0, 20:] = 1, 2, 3, 4
    alone = ((False, False), (False, False))
    offsets = [(0, 1), (0, 5)]
    weights = np.full((2, 1, 30), -1.0)
    found, strength = separations(local, weights, offsets, alone, 0)
    # 1 and 2 do not touch (an edge of offset 5 links them): no separation
    assert found.tolist() == [[2, 3], [3, 4]]
    # 2|3: one unit edge (9 -> 10) and four of offset 5 (6..9 -> 11..14); 3|4: one and five
    assert strength.tolist() == [5.0, 6.0]
    # the same whichever way an offset points, and without a unit step among the offsets
    flipped = separations(local, weights, [(0, -1), (0, -5)], alone, 0)
    assert flipped[0].tolist() == found.tolist() and flipped[1].tolist() == [5.0, 6.0]
    long_only = separations(local, weights[1:], [(0, 5)], alone, 0)
    assert long_only[0].tolist() == found.tolist() and long_only[1].tolist() == [4.0, 5.0]


def brute_force_separations(local, weights, offsets, margin, wanted):
    """Edge by edge in Python: the pairs of wanted fragments a unit step joins, and minus
    the summed weight of every offset's edges between them (0 where that attracts)."""
    trusted = tuple(slice(margin, n - margin) for n in local.shape)
    labels = local[trusted]
    touching, summed = set(), {}
    for p in itertools.product(*map(range, labels.shape)):
        for channel, offset in enumerate(offsets):
            q = tuple(a + o for a, o in zip(p, offset))
            if not all(0 <= a < n for a, n in zip(q, labels.shape)):
                continue
            a, b = int(labels[p]), int(labels[q])
            if a == b or not (a and b and wanted[a] and wanted[b]):
                continue
            pair = (min(a, b), max(a, b))
            summed[pair] = summed.get(pair, 0.0) + weights[channel][trusted][p]
            if sum(map(abs, offset)) == 1:
                touching.add(pair)
    ordered = sorted(touching)
    return ordered, [max(-summed[pair], 0.0) for pair in ordered]


@pytest.mark.parametrize("table_entries", [separations_module.PAIR_TABLE_ENTRIES, 0],
                         ids=["table by ranks", "sorted keys"])
def test_strength_is_every_edge_between_the_pair_either_way_it_is_looked_up(
        monkeypatch, table_entries):
    monkeypatch.setattr(separations_module, "PAIR_TABLE_ENTRIES", table_entries)
    rng = np.random.default_rng(3)
    # fragments of 2 x 3 x 3 voxels, numbered at random, some unwanted, some background
    local = np.kron(rng.integers(0, 40, (7, 5, 5)), np.ones((2, 3, 3), np.int64))
    local = local.astype(np.uint32)
    wanted = rng.random(40) < 0.8
    offsets = [(-1, 0, 0), (0, 1, 0), (0, 0, 1), (3, 0, 0), (0, -4, 2)]
    weights = rng.normal(-0.2, 1.0, (len(offsets),) + local.shape)
    inner = ((True, True),) * 3
    found, strength = separations(local, weights, offsets, inner, 2, wanted)
    expected, expected_strength = brute_force_separations(local, weights, offsets, 2, wanted)
    assert [tuple(p) for p in found.T.tolist()] == expected and len(expected) > 20
    assert np.allclose(strength, expected_strength) and (strength > 0).sum() > 5


def test_only_pairs_of_fragments_at_a_face_are_kept():
    local = np.zeros((1, 30), np.uint32)
    local[0, :4], local[0, 6:10], local[0, 10:20], local[0, 20:] = 1, 2, 3, 4
    below = ((False, False), (True, False))  # a block below along the second axis only
    # 3 starts 10 voxels from that face, 4 20 voxels
    assert face_fragments(local, below, (0, 8)).tolist() == [False, True, True, False, False]
    assert pairs(separated_pairs(local, below, 2, face_fragments(local, below, (0, 12)))) == {
        (2, 3)}
    assert pairs(separated_pairs(local, below, 2, face_fragments(local, below, (0, 25)))) == {
        (2, 3), (3, 4)}
    alone = ((False, False), (False, False))  # no neighbour: nothing can be joined
    assert not face_fragments(local, alone, (0, 12)).any()


def test_strength_sums_the_repulsion_of_every_offset_between_two_fragments():
    local = np.zeros((1, 3 * M), np.uint32)
    local[0, :M], local[0, M : 2 * M], local[0, 2 * M :] = 1, 2, 3
    offsets = [(0, 1), (0, 2)]
    weights = np.full((2, 1, 3 * M), 0.3)  # attracting everywhere ...
    weights[:, 0, M - 2 : M] = -0.4  # ... but on the edges leaving 1 for 2
    alone = ((False, False), (False, False))
    found, strength = separations(local, weights, offsets, alone, M)
    assert found.tolist() == [[1, 2], [2, 3]]
    # 1|2: one unit edge (-0.4) and two offset-2 edges (-0.4 each); 2|3 attracts: no repulsion
    assert np.allclose(strength, [1.2, 0])


def test_strength_counts_only_the_trusted_region():
    local = np.zeros((2, 4 * M), np.uint32)
    local[0, : M // 2], local[0, M // 2 :] = 1, 2  # 1|2 touch M/2 from the face below ...
    local[1, : 2 * M], local[1, 2 * M :] = 1, 2  # ... and 2M from it, deep inside
    weights = np.zeros((1, 2, 4 * M))
    weights[0, 0, M // 2 - 1] = weights[0, 1, 2 * M - 1] = -1.0  # on the edges from 1 to 2
    below = ((False, False), (True, False))
    found, strength = separations(local, weights, [(0, 1)], below, M)
    assert found.tolist() == [[1], [2]] and strength.tolist() == [1.0]
    found, strength = separations(local, weights, [(0, 1)], ((False, False),) * 2, M)
    assert found.tolist() == [[1], [2]] and strength.tolist() == [2.0]


def test_a_weak_join_does_not_cross_a_strong_separation():
    # x -50- f -5- y, and a block saw x and y apart with strength 10
    u, v, overlap = np.array([0, 1]), np.array([1, 2]), np.array([50.0, 5.0])
    segment = join_fragments(3, u, v, overlap, np.array([0]), np.array([2]), np.array([10.0]))
    assert segment.tolist() == [0, 0, 2]


def test_a_strong_join_outweighs_a_weak_separation():
    # the same, but both joins outweigh the separation
    strong = 2 * SEPARATION_FLOOR
    u, v, overlap = np.array([0, 1]), np.array([1, 2]), np.array([strong + 10, strong])
    weak = np.array([SEPARATION_FLOOR / SEPARATION_WEIGHT])
    segment = join_fragments(3, u, v, overlap, np.array([0]), np.array([2]), weak)
    assert segment.tolist() == [0, 0, 0]


def test_no_join_weaker_than_the_floor_crosses_a_repelling_contact():
    u, v, overlap = np.array([0, 1]), np.array([1, 2]), np.array([SEPARATION_FLOOR + 1, 90.0])
    tiny = np.array([0.01])
    segment = join_fragments(3, u, v, overlap, np.array([0]), np.array([2]), tiny)
    assert segment.tolist() == [0, 0, 2]
    attracting = np.array([0.0])  # a contact that attracts on the whole is no separation
    segment = join_fragments(3, u, v, overlap, np.array([0]), np.array([2]), attracting)
    assert segment.tolist() == [0, 0, 0]


def test_separations_between_unjoined_fragments_change_nothing():
    u, v, overlap = np.array([0, 3]), np.array([1, 4]), np.ones(2)
    segment = join_fragments(5, u, v, overlap, np.array([1, 2]), np.array([3, 4]),
                             np.array([5.0, 5.0]))
    assert segment.tolist() == [0, 0, 2, 3, 3]


def test_every_separation_in_a_segment_is_honoured():
    # a star: fragment 0 joined to 1..4; blocks saw 1|2 and 3|4 apart
    u, v = np.zeros(4, np.int64), np.arange(1, 5)
    overlap = np.array([10.0, 3.0, 8.0, 2.0])
    segment = join_fragments(5, u, v, overlap, np.array([1, 3]), np.array([2, 4]),
                             np.array([100.0, 100.0]))
    assert segment.tolist() == [0, 0, 2, 0, 4]
