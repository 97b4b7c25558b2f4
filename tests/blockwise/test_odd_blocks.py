"""Odd blocks: seeds through the weights, and the joins a seeded kernel's labels make."""

import numpy as np

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.blockwise.odd_blocks import CERTAIN, seed_joins, seed_weights
from napari_mutex_watershed.engine import run_kernel

S = 100  # ids per block


def own(block_ids):
    """own_ids for a block whose fragments are the kernel labels in ``block_ids``."""
    table = dict(block_ids)
    return lambda labels: np.array([table.get(int(x), 0) for x in labels], np.uint64)


def test_seeds_attract_inside_a_label_and_repel_within_one_block_only():
    seeds = np.array([[S + 1, S + 1, S + 2, 2 * S + 1, 0]], np.uint64)
    weights = np.zeros((1, 1, 5))
    seed_weights(weights, seeds, [(0, 1)], S)
    # same label; two labels of block 1; labels of blocks 1 and 2 may be one object; no seed
    assert weights[0, 0].tolist() == [CERTAIN, -CERTAIN, 0, 0, 0]
    # block 0's labels (ids below S) too; no seed next to one of them
    seeds = np.array([[1, 2, 2, 0, 1, S + 1]], np.uint64)
    weights = np.zeros((1, 1, 6))
    seed_weights(weights, seeds, [(0, 1)], S)
    assert weights[0, 0].tolist() == [-CERTAIN, CERTAIN, 0, 0, 0, 0]


def test_a_seeded_kernel_keeps_one_blocks_labels_apart_and_lets_two_blocks_join():
    parameters = WatershedParameters(offsets=[(0, 1)], bias=0.5)
    # weak affinities everywhere: alone, every voxel would stay on its own
    weights = np.full((1, 1, 6), 0.1 - 0.5)
    seeds = np.array([[S + 1, S + 1, S + 2, 0, 2 * S + 1, 2 * S + 1]], np.uint64)
    weights[0, 0, 2:4] = 0.9 - 0.5  # the free voxel 3 attracts seed S + 2 and block 2's seed
    seed_weights(weights, seeds, parameters.offsets, S)
    raw = run_kernel(weights, parameters)
    assert raw[0, 0] == raw[0, 1] != raw[0, 2]
    assert raw[0, 2] == raw[0, 3] == raw[0, 4] == raw[0, 5]


def test_fragments_join_the_seeds_they_take_in_weighted_by_overlap():
    raw = np.array([[5, 5, 5, 7, 7, 0]], np.uint64)
    seeds = np.array([[S + 1, S + 1, 0, 2 * S + 3, 0, 2 * S + 4]], np.uint64)
    joins, overlap = seed_joins(raw, seeds, own({5: 501, 7: 502}))
    assert sorted(zip(joins[0].tolist(), joins[1].tolist(), overlap.tolist())) == [
        (501, S + 1, 2), (502, 2 * S + 3, 1)]  # background (label 0) joins nothing


def test_a_segment_of_the_halo_alone_joins_its_seeds_with_each_other():
    raw = np.array([[9, 9, 9, 9, 4]], np.uint64)
    seeds = np.array([[S + 1, S + 1, 2 * S + 1, 3 * S + 2, 0]], np.uint64)
    joins, overlap = seed_joins(raw, seeds, own({4: 401}))  # 9 is not this block's fragment
    assert sorted(zip(joins[0].tolist(), joins[1].tolist(), overlap.tolist())) == [
        (S + 1, 2 * S + 1, 1), (S + 1, 3 * S + 2, 1)]
