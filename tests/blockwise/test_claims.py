"""Claims: a local worker takes the even blocks first, an odd block only once the even blocks
it reads are recorded, waits while others compute what is left, and gives up a block that
keeps failing. Each claim held here stands for a worker computing that block; a record holds
only what a claim reads."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from patience import patience

from napari_mutex_watershed.blockwise.claims import WAIT, BlockClaims, pooled
from napari_mutex_watershed.blockwise.launch import plan_run
from napari_mutex_watershed.blockwise.odd_order import REPULSIVE_TOWARD_ODD
from napari_mutex_watershed.blockwise.progress import ColourProgress
from napari_mutex_watershed.errors import BlockwiseError, InvalidInputError
from napari_mutex_watershed.storage import write_affinities
from napari_mutex_watershed.synthetic import sample_volume


@pytest.fixture
def plan(tmp_path):
    """A 4 x 2 x 2 grid: an odd block reads the even blocks of its own and the next layers."""
    affinities, _, offsets = sample_volume((32, 64, 64), seed=1)
    path = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    return plan_run(path, tmp_path / "out.zarr/labels", block_size=(8, 32, 32), max_retries=1)


def record(plan, *positions, repulsive=0.25, seconds=None):
    """Records of blocks that saw this share of repulsive edges toward every face (and took
    ``seconds``)."""
    plan.records_dir.mkdir(parents=True, exist_ok=True)
    toward = np.zeros((plan.ndim, 2, 2), np.int64)
    toward[..., 0], toward[..., 1] = round(1000 * repulsive), 1000
    took = {} if seconds is None else {"block_seconds": seconds}
    for position in positions:
        np.savez(plan.block_record(plan.block_index(position)),
                 **{REPULSIVE_TOWARD_ODD: toward}, **took)


def take(claims, held):
    """Claim the next block and keep holding it, as a worker computing it would."""
    claim = claims.claim()
    position = claim.__enter__()
    held.append(claim)
    return position


def evens(plan):
    return [p for p in BlockClaims(plan).order if not plan.is_odd(p)]


def test_a_local_run_pools_its_workers_and_a_cluster_run_does_not(plan):
    assert pooled(plan)
    assert not pooled(plan.model_copy(update={"worker_command": "srun {command}"}))


def test_even_blocks_first_in_grid_order_then_odd_blocks_once_ready(plan):
    claims, held = BlockClaims(plan), []
    assert [take(claims, held) for _ in range(8)] == evens(plan)
    # every even block under way: no odd block can start yet, but some will
    assert take(claims, held) is WAIT
    record(plan, *[p for p in evens(plan) if p[0] < 2])  # the first two layers
    # of the odd blocks, only those whose halo stays within the first two layers are ready
    assert take(claims, held) == (0, 0, 1)
    assert take(claims, held) == (0, 1, 0)
    assert take(claims, held) is WAIT
    record(plan, *evens(plan))
    assert take(claims, held) == (1, 0, 0)


def test_of_the_ready_odd_blocks_the_longest_expected_goes_first(plan):
    # an odd block is expected to take what the even blocks across its faces saw of it
    slow = [(1, 0, 1), (1, 1, 0), (2, 0, 0)]  # three of the four around odd block (1, 0, 0)
    record(plan, *[p for p in evens(plan) if p not in slow], repulsive=0.2)
    record(plan, *slow, repulsive=0.6)
    claims, held = BlockClaims(plan), []
    taken = [take(claims, held) for _ in range(8)]
    assert taken[0] == (1, 0, 0)
    # two of four across their faces, then one of three, and none (ties in grid order)
    assert set(taken[1:4]) == {(1, 1, 1), (2, 0, 1), (2, 1, 0)}
    assert taken[4:] == [(0, 0, 1), (0, 1, 0), (3, 0, 0), (3, 1, 1)]


def test_a_claim_tells_when_it_was_taken_while_it_is_held(plan):
    # near the end the odd blocks' order counts on when the blocks under way were taken
    record(plan, *evens(plan), seconds=1.0)
    claims, held = BlockClaims(plan), []
    before = time.time()
    first, second = take(claims, held), take(claims, held)
    taken_at = (plan.claims_dir / f"{plan.block_index(first)}.lock").stat().st_mtime
    assert before - 1 <= taken_at <= time.time() + 1
    held.pop(0).__exit__(None, None, None)  # the first let go (failed, or its worker died)
    assert claims._started([first, second]) == {
        second: (plan.claims_dir / f"{plan.block_index(second)}.lock").stat().st_mtime}
    # taken again (a retry, a resume): the claim's time is the new one
    lock = plan.claims_dir / f"{plan.block_index(first)}.lock"
    os.utime(lock, (before - 100, before - 100))
    assert first in {take(claims, held) for _ in range(7)}
    assert lock.stat().st_mtime >= before - 1


def test_a_block_recorded_or_under_way_is_never_taken_twice(plan):
    claims, held = BlockClaims(plan), []
    first = take(claims, held)
    record(plan, evens(plan)[1])
    assert take(claims, held) == evens(plan)[2]
    assert first not in [take(claims, held) for _ in range(5)]


def test_none_left_once_every_block_is_recorded(plan):
    claims = BlockClaims(plan)
    record(plan, *claims.order)
    with claims.claim() as position:
        assert position is None
    claims.check_complete(None)  # nothing missing: no error


def test_a_block_that_keeps_failing_is_given_up_with_the_odd_blocks_that_read_it(plan):
    claims = BlockClaims(plan)
    failing = evens(plan)[-1]  # in the last layer
    record(plan, *evens(plan)[:-1])
    for _ in range(plan.max_retries + 1):
        with pytest.raises(ValueError), claims.claim() as position:
            assert position == failing
            raise ValueError("broken")
    assert claims.is_given_up(plan.block_index(failing))
    # the odd blocks of the last two layers read it: never offered; the others are
    offered = []
    while True:
        with claims.claim() as position:
            if position is None:
                break
            assert position is not WAIT
            offered.append(position)
            record(plan, position)
    assert sorted(offered) == [p for p in claims.order if plan.is_odd(p) and p[0] < 2]
    with pytest.raises(BlockwiseError, match=r"^even: 1 block\(s\) failed, at voxel offsets "
                       r"\[\(24, 32, 0\)\], after 2 tries \(4 more could not run\): broken$"):
        claims.check_complete("broken")


def test_a_block_that_meets_an_input_error_is_given_up_at_once(plan):
    # the run stops; until it does, no other worker may take the block and fail again
    claims = BlockClaims(plan)
    with pytest.raises(InvalidInputError), claims.claim() as position:
        raise InvalidInputError("affinities contain 1 NaN")
    assert claims.is_given_up(plan.block_index(position))
    with claims.claim() as other:
        assert other != position


def test_a_new_attempt_tries_the_blocks_given_up_again(plan):
    claims = BlockClaims(plan)
    for _ in range(plan.max_retries + 1):
        with pytest.raises(ValueError), claims.claim() as position:
            raise ValueError("broken")
    assert claims.is_given_up(plan.block_index(position))
    markers = plan.tracking_dir / "blocks"
    markers.mkdir(parents=True)
    BlockClaims(plan).new_attempt()
    assert not claims.is_given_up(plan.block_index(position)) and not markers.exists()
    with BlockClaims(plan).claim() as again:
        assert again == position


HOLD = """
import sys
from napari_mutex_watershed.blockwise.claims import BlockClaims
from napari_mutex_watershed.blockwise.plan import BlockwisePlan
with BlockClaims(BlockwisePlan.load(sys.argv[1])).claim() as position:
    print(position, flush=True)
    sys.stdin.read()
"""


def test_a_killed_worker_leaves_its_block_to_the_next_claim(plan):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(plan.save())],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == str(evens(plan)[0])
        claims, held = BlockClaims(plan), []
        assert take(claims, held) == evens(plan)[1]  # the first is under way
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=patience(30))
        assert take(claims, held) == evens(plan)[0]
    finally:
        holder.kill()


def test_progress_counts_each_colour_and_what_an_earlier_attempt_did(plan):
    record(plan, *evens(plan)[:3])
    claims = BlockClaims(plan)
    progress = ColourProgress(plan, given_up=claims.given_up)
    record(plan, evens(plan)[3], (0, 0, 1))
    assert progress(None, final=True) == [
        ("even", 4, 8, {"failed": 0, "skipped": 3}),
        ("odd", 1, 8, {"failed": 0, "skipped": 0}),
    ]
