"""build_lookup on hand-written block records: numbering, joins, separations, filters on
whole segments."""

import numpy as np
import pytest

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.blockwise import mask_seeds, stitch
from napari_mutex_watershed.blockwise.plan import BlockwisePlan
from napari_mutex_watershed.blockwise.stitch import build_lookup
from napari_mutex_watershed.errors import IncompleteRunError, MutexWatershedError


def make_plan(tmp_path, n_blocks, **parameters) -> BlockwisePlan:
    """A 1 x n_blocks grid of 4 x 4 blocks (2D); only the records matter here. Segments of
    every size are kept unless ``min_size`` is given."""
    parameters.setdefault("min_size", 0)
    plan = BlockwisePlan(
        input_path=str(tmp_path / "in.zarr"),
        output_path=str(tmp_path / "out.zarr"),
        work_dir=str(tmp_path / "work"),
        parameters=WatershedParameters(offsets=[(1, 0), (0, 1)], **parameters),
        roi_offset=(0, 0),
        shape=(4, 4 * n_blocks),
        block_size=(4, 4),
    )
    plan.records_dir.mkdir(parents=True)
    return plan


def fragment(plan, block, local) -> int:
    return block * plan.ids_per_block + local


def write_block(plan, index, sizes, joins=(), separated=(), nn_sums=None):
    """``sizes`` of local fragments 1..n; ``joins`` (u, v, overlap) as fragment ids;
    ``separated`` (a, b, strength) as local ids."""
    np.savez(
        plan.block_record(index),
        sizes=np.array([0, *sizes], np.int64),
        nn_sums=np.zeros(0) if nn_sums is None else np.array([0.0, *nn_sums]),
        separated=np.array([(a, b) for a, b, _ in separated], np.uint32).reshape(-1, 2).T,
        strength=np.array([w for _, _, w in separated], float),
        joins=np.array([(u, v) for u, v, _ in joins], np.uint64).reshape(-1, 2).T,
        overlap=np.array([o for _, _, o in joins], np.int64),
        kernel_seconds=0.5,
        block_seconds=0.75,
    )


def lookup_of(plan) -> list[int]:
    return np.load(plan.lookup_path).tolist()


def test_fragments_without_a_join_are_numbered_in_block_order(tmp_path):
    plan = make_plan(tmp_path, 3)
    write_block(plan, 0, [5, 6])
    write_block(plan, 1, [])  # a block can hold no fragment at all
    write_block(plan, 2, [7])
    summary = build_lookup(plan)
    assert lookup_of(plan) == [0, 1, 2, 3]
    assert np.load(plan.bases_path).tolist() == [0, 2, 2]
    assert summary["segments"] == 3 and summary["kernel_seconds"] == 1.5
    assert summary["block_seconds"] == 2.25


def test_a_joined_segment_takes_the_id_of_its_first_fragment(tmp_path):
    plan = make_plan(tmp_path, 2)
    a, b = fragment(plan, 0, 2), fragment(plan, 1, 1)
    write_block(plan, 0, [3, 4, 5])
    write_block(plan, 1, [6, 7], joins=[(b, a, 10)])  # block 1 took a in as a seed
    summary = build_lookup(plan)
    assert lookup_of(plan) == [0, 1, 2, 3, 2, 4]
    assert summary["segments"] == 4 and summary["joins"] == 1


def test_min_size_applies_to_whole_segments(tmp_path):
    plan = make_plan(tmp_path, 2, min_size=10)
    a, b = fragment(plan, 0, 1), fragment(plan, 1, 2)
    # 6 + 6 voxels across the face survive; a lone 6-voxel fragment does not
    write_block(plan, 0, [6, 6, 20])
    write_block(plan, 1, [9, 6], joins=[(b, a, 3)])
    summary = build_lookup(plan)
    assert lookup_of(plan) == [0, 1, 0, 2, 0, 1]
    assert summary["segments"] == 2


def test_threshold_applies_to_the_mean_affinity_of_whole_segments(tmp_path):
    plan = make_plan(tmp_path, 2, threshold=0.5)
    a, b = fragment(plan, 0, 1), fragment(plan, 1, 1)
    # joined: (0.8 * 4 + 0.1 * 4) / 8 = 0.45 < 0.5; alone, 0.8 would have passed
    write_block(plan, 0, [4, 4], nn_sums=[3.2, 3.6])
    write_block(plan, 1, [4], joins=[(b, a, 3)], nn_sums=[0.4])
    build_lookup(plan)
    assert lookup_of(plan) == [0, 0, 1, 0]


def test_a_separation_refuses_the_weaker_join(tmp_path):
    plan = make_plan(tmp_path, 2)
    # block 0 kept fragments 1 and 2 apart deep inside; block 1's fragment 1 took in both
    a1, a2, b = fragment(plan, 0, 1), fragment(plan, 0, 2), fragment(plan, 1, 1)
    write_block(plan, 0, [9, 9], separated=[(1, 2, 4.0)])
    write_block(plan, 1, [9], joins=[(b, a1, 30), (b, a2, 2)])
    summary = build_lookup(plan)
    assert lookup_of(plan) == [0, 1, 2, 1]
    assert summary["joins_refused"] == 1


def test_joins_from_ids_of_two_blocks_use_each_blocks_numbering(tmp_path):
    # a segment of block 1's halo alone took in fragments of blocks 0 and 2: it joins them
    plan = make_plan(tmp_path, 3)
    a, c = fragment(plan, 0, 2), fragment(plan, 2, 1)
    write_block(plan, 0, [5, 5])
    write_block(plan, 1, [5], joins=[(a, c, 7)])
    write_block(plan, 2, [5])
    build_lookup(plan)
    assert lookup_of(plan) == [0, 1, 2, 3, 2]


def test_a_missing_record_names_the_block(tmp_path):
    plan = make_plan(tmp_path, 2)
    write_block(plan, 0, [3])
    with pytest.raises(IncompleteRunError, match=r"block \(0, 1\)"):
        build_lookup(plan)


def test_more_segments_than_the_output_holds_is_a_clear_error(tmp_path, monkeypatch):
    plan = make_plan(tmp_path, 1)
    write_block(plan, 0, [3, 3, 3])
    monkeypatch.setattr(mask_seeds, "MAX_SEGMENTS", 2)
    with pytest.raises(MutexWatershedError, match="3 segments do not fit the uint32 output"):
        build_lookup(plan)
    assert not plan.lookup_path.exists()


@pytest.mark.parametrize("shape", ["path in order", "path shuffled", "star", "tree shuffled",
                                   "random", "no edges"])
def test_components_number_like_scipys_connected_components(shape):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(7)
    n = 5_000
    order = rng.permutation(n)
    nodes = np.arange(n)
    u, v = {
        "path in order": (nodes[:-1], nodes[1:]),
        "path shuffled": (order[:-1], order[1:]),
        "star": (np.full(n - 1, n // 2), np.delete(nodes, n // 2)),
        "tree shuffled": (order[1:], order[(nodes[1:] - 1) // 2]),
        "random": (rng.integers(0, n, n // 2), rng.integers(0, n, n // 2)),
        "no edges": (nodes[:0], nodes[:0]),
    }[shape]
    graph = coo_matrix((np.ones(len(u), np.int8), (u, v)), shape=(n, n))
    expected = connected_components(graph, directed=False)[1]
    assert np.array_equal(stitch.components(n, u, v), expected)
