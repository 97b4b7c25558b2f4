"""The odd blocks' order: their expected work from what the even blocks counted, and near
the end the block whose plan ends soonest first."""

import numpy as np
import pytest

from napari_mutex_watershed.blockwise.even_blocks import EvenBlocks
from napari_mutex_watershed.blockwise.launch import plan_run
from napari_mutex_watershed.blockwise.odd_order import (
    REPULSIVE_TOWARD_ODD,
    OddOrder,
    odd_kernel_box,
    repulsive_toward_odd,
    soonest_end,
)
from napari_mutex_watershed.storage import write_affinities
from napari_mutex_watershed.synthetic import sample_volume


@pytest.fixture
def plan(tmp_path):
    """A 4 x 2 x 2 grid of blocks."""
    affinities, _, offsets = sample_volume((32, 64, 64), seed=1)
    path = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    return plan_run(path, tmp_path / "out.zarr/labels", block_size=(8, 32, 32))


def evens(plan):
    return [p for p in np.ndindex(*plan.grid_shape) if not plan.is_odd(p)]


def volume(box):
    return int(np.prod([b - a for a, b in zip(*box)]))


def test_an_odd_block_is_expected_its_voxels_times_the_repulsive_share_seen_toward_it(plan):
    toward = {}
    for n, position in enumerate(evens(plan)):
        counts = np.zeros((plan.ndim, 2, 2), np.int64)
        counts[..., 0] = np.arange(6).reshape(3, 2) + 10 * n  # repulsive edges, per face
        counts[..., 1] = 100 + n  # edges
        toward[position] = counts
        plan.records_dir.mkdir(parents=True, exist_ok=True)
        np.savez(plan.block_record(plan.block_index(position)), **{REPULSIVE_TOWARD_ODD: counts})
    order = OddOrder(plan)
    for position in (p for p in np.ndindex(*plan.grid_shape) if plan.is_odd(p)):
        repulsive = edges = 0
        for axis in range(3):
            for step, face in ((-1, 1), (1, 0)):  # the block below sees it across its upper face
                neighbour = list(position)
                neighbour[axis] += step
                if tuple(neighbour) in toward:
                    repulsive += toward[tuple(neighbour)][axis, face, 0]
                    edges += toward[tuple(neighbour)][axis, face, 1]
        assert order.expected_work(position) == pytest.approx(
            repulsive / edges * volume(odd_kernel_box(plan, position)))


def test_an_even_block_records_the_repulsive_edges_where_its_box_overlaps_an_odd_one(plan):
    even = EvenBlocks(str(plan.work_dir) + "/plan.json")
    even.open()
    position = (1, 0, 1)  # odd blocks below and above in depth, below in y, below in x
    block = even.read_with_halo(even.source, position, plan.context)
    weights = np.where(np.random.default_rng(0).random(block.kernel_weights.shape) < 0.3,
                       -1.0, 1.0)
    counts = repulsive_toward_odd(plan, position, weights, block.kernel_lo)
    grid = np.indices(weights.shape[1:]) + np.array(block.kernel_lo).reshape(3, 1, 1, 1)
    for axis, side, odd in [(0, 0, (0, 0, 1)), (0, 1, (2, 0, 1)), (1, 0, None), (1, 1, (1, 1, 1)),
                            (2, 0, (1, 0, 0)), (2, 1, None)]:
        if odd is None:  # the volume's edge: no block there
            assert counts[axis, side].tolist() == [0, 0]
            continue
        lo, hi = odd_kernel_box(plan, odd)
        inside = np.all([(g >= a) & (g < b) for g, a, b in zip(grid, lo, hi)], axis=0)
        first = [g[inside].min() for g in grid]  # every other voxel from the overlap's corner
        sampled = inside & np.all([(g - f) % 2 == 0 for g, f in zip(grid, first)], axis=0)
        assert counts[axis, side].tolist() == [int((weights[:, sampled] < 0).sum()),
                                               weights.shape[0] * int(sampled.sum())]
    # the computed block records its own
    even.compute(position)
    with np.load(plan.block_record(plan.block_index(position))) as record:
        recorded = record[REPULSIVE_TOWARD_ODD]
    assert recorded.shape == (3, 2, 2) and (recorded[..., 1] == counts[..., 1]).all()
    assert recorded[0, 0, 0] > 0


def test_soonest_end_takes_the_block_that_lets_the_workers_end_together():
    seconds = {"a": 4.0, "b": 3.0, "c": 3.0}.get
    # this worker is free now, the other in 2 s: the longest first would end at 7 s (a,
    # then c after b went to the other), a shorter one first at 6 s; ties keep the order
    assert soonest_end(["a", "b", "c"], ["a", "b", "c"], seconds, [0.0, 2.0]) == "b"
    # both free: the longest first ends soonest (4 + 3 against 3 + 3 and 4)
    assert soonest_end(["a", "b", "c"], ["a", "b", "c"], seconds, [0.0, 0.0]) == "a"
    # blocks not ready yet count in the plan, but are not taken
    assert soonest_end(["a", "b"], ["a", "b", "c"], seconds, [0.0, 2.0]) == "b"


def test_the_order_is_most_work_first_unless_near_the_end(plan):
    plan = plan.model_copy(update={"num_workers": 2})
    plan.records_dir.mkdir(parents=True, exist_ok=True)
    toward = np.zeros((3, 2, 2), np.int64)
    toward[..., 0], toward[..., 1] = 250, 1000
    for position in evens(plan):
        np.savez(plan.block_record(plan.block_index(position)), block_seconds=1.0,
                 **{REPULSIVE_TOWARD_ODD: toward})
    order = OddOrder(plan)
    odd = [p for p in np.ndindex(*plan.grid_shape) if plan.is_odd(p)]
    ranked = order.order(odd, [])
    work = [order.expected_work(p) for p in ranked]
    assert work == sorted(work, reverse=True) and work[0] > work[-1]
    assert order.near_end(len(odd)) and not order.near_end(17)
    # near the end: the other worker took the block of most work 0.25 s ago; an odd block
    # takes the even blocks' mean time (1 s) for the odd blocks' mean work
    first, rest = ranked[0], ranked[1:]
    seconds = {p: w / np.mean(work) for p, w in zip(ranked, work)}.get
    balanced = order.order(odd, [], {first: 99.75}, 100.0)
    assert balanced[0] == soonest_end(rest, rest, seconds, [100.0, 99.75 + seconds(first)])
    assert sorted(balanced) == sorted(odd) and balanced[1:] == [p for p in ranked
                                                                if p != balanced[0]]
    # a block not ready yet counts with the mean time
    waiting = rest[-2:]
    ready = [p for p in odd if p not in waiting]
    mean = {p: 1.0 for p in waiting}
    seconds = {p: order.expected_work(p) / np.mean([order.expected_work(q) for q in ready])
               for p in ready} | mean
    choice = order.order(ready, waiting, {first: 99.75}, 100.0)[0]
    candidates = [p for p in ranked if p in ready and p != first]
    assert choice == soonest_end(candidates, candidates + waiting, seconds.get,
                                 [100.0, 99.75 + seconds[first]])


def test_with_no_repulsive_edge_counted_the_order_is_the_grid_order(plan):
    # an all-attractive volume: every odd block is expected no work, none divides by it
    plan = plan.model_copy(update={"num_workers": 2})
    plan.records_dir.mkdir(parents=True, exist_ok=True)
    toward = np.zeros((3, 2, 2), np.int64)
    toward[..., 1] = 1000
    for position in evens(plan):
        np.savez(plan.block_record(plan.block_index(position)), block_seconds=1.0,
                 **{REPULSIVE_TOWARD_ODD: toward})
    odd = [p for p in np.ndindex(*plan.grid_shape) if plan.is_odd(p)]
    assert OddOrder(plan).order(odd, [], {odd[0]: 99.0}, 100.0) == odd


def test_no_ready_odd_block_gives_an_empty_order_quietly(plan, recwarn):
    # a look while every odd block waits for its even blocks: nothing to order, no warning
    # in the workers' logs (a mean of nothing)
    odd = [p for p in np.ndindex(*plan.grid_shape) if plan.is_odd(p)]
    assert OddOrder(plan).order([], odd, {}, 100.0) == []
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
