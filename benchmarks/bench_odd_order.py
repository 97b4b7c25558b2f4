"""Which odd block goes first: how well each estimate of an odd block's kernel time foretells
it, and how far apart two workers end when the odd blocks are taken in its order
(docs/blockwise.md, *Speed and memory*).

    python benchmarks/bench_odd_order.py                       # the two 256^3 crops
    python benchmarks/bench_odd_order.py --crops 256,256 --biases 0.5,0.7 0.4,0.6

Per crop of the shared neuron labels (bench_blockwise's affinities; skipped when
../shared/data is absent), in this one process: every even block, then every odd block,
computed by the real steps at the default block size, so each record holds its times and
what the claims read. Then the odd blocks are ordered:

- *grid order*: daisy's;
- *neighbours' time, longest first* (before 2026-12-06): the kernel seconds per voxel of the
  even blocks across its faces times its own kernel box's voxels;
- *repulsive edges, most first*: ``OddOrder.expected_work``, its voxels times the share of
  repulsive edges its even neighbours counted where their boxes and its own overlap;
- *repulsive edges, soonest end near the end* (what ships, ``OddOrder.order``);
- *repulsive edges of its own box, most first*: the repulsive edges its kernel was given
  (its whole box, seeded), counted as it ran: what an estimate could know at best before
  the block runs, were its box read beforehand;
- *its own time, longest first*: the recorded time itself.

The odd blocks are computed twice; the table holds the second time, and a last line the
kernel's own repeat (the mean difference between a block's two kernel times) beside the
shipped estimate's error (scaled to the mean time): no order can foretell a block better
than the same block foretells itself.

For each: the correlation of its estimate with the odd blocks' kernel time, and a replay of
a two-worker run with the recorded block times (the even blocks in grid order, then the odd
block the order picks whenever a worker is free): the gap between the two workers' ends
(one worker idle that long) and its ratio to the order before. Block times here are those
of one process alone, not of two workers side by side, so ``bench_blockwise`` has the last
word on a run.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
from bench_blockwise import CROPS, DATA, crop_labels, write_crop

WORKERS = 2


def open_block_steps(path, output, parameters) -> tuple:
    """A plan of ``path`` into ``output``, its claims (whose order takes the even blocks
    first) and its steps opened in this process, {False: even, True: odd}: what computes
    every block of a run here, ``steps[plan.is_odd(p)].compute(p)`` for p in the order."""
    from napari_mutex_watershed.blockwise.claims import BlockClaims
    from napari_mutex_watershed.blockwise.even_blocks import EvenBlocks
    from napari_mutex_watershed.blockwise.launch import plan_run
    from napari_mutex_watershed.blockwise.odd_blocks import OddBlocks
    from napari_mutex_watershed.blockwise.plan import PLAN_FILE

    plan = plan_run(path, output, parameters)
    plan_path = str(Path(plan.work_dir) / PLAN_FILE)
    steps = {False: EvenBlocks(plan_path), True: OddBlocks(plan_path)}
    for step in steps.values():
        step.open()
    return plan, BlockClaims(plan), steps


def compute_blocks(work: Path, corner: str, biases) -> tuple:
    """Run every block of the crop in this process; the plan and the claims over it."""
    slug = f"{corner.replace(',', '_')}_{biases[0]}_{biases[1]}"
    path, parameters = write_crop(work, slug, crop_labels(corner, 256), noise_seed=1)
    parameters = parameters.model_copy(update={"bias_short": biases[0], "bias_long": biases[1]})
    plan, claims, steps = open_block_steps(path, work / f"{slug}-out.zarr/labels", parameters)
    for position in claims.order:
        steps[plan.is_odd(position)].compute(position)
    return plan, claims, steps[True]


def compute_odd_again(plan, step, odd) -> tuple[np.ndarray, np.ndarray]:
    """Each odd block again: the repulsive edges its kernel was given, and its first
    kernel time (the record now holds the second)."""
    from napari_mutex_watershed.blockwise import odd_blocks

    first = np.array([recorded(plan, p, "kernel_seconds") for p in odd])
    counts, kernel = [], odd_blocks.run_kernel

    def counting(weights, *arguments):
        counts.append(np.count_nonzero(weights < 0))
        return kernel(weights, *arguments)

    odd_blocks.run_kernel = counting
    try:
        for position in odd:
            step.compute(position)
    finally:
        odd_blocks.run_kernel = kernel
    return np.array(counts, float), first


def recorded(plan, position, name="block_seconds") -> float:
    with np.load(plan.block_record(plan.block_index(position))) as record:
        return float(record[name])


def neighbours_time(plan, position) -> float:
    """The estimate before: the even neighbours' kernel seconds per voxel of their boxes."""
    from napari_mutex_watershed.blockwise.task import grow_clipped

    def voxels(where, context):
        core = plan.core(tuple(where))
        lo, hi = grow_clipped(tuple(core.begin), tuple(core.end), context, plan.shape)
        return math.prod(b - a for a, b in zip(lo, hi))

    rates = [recorded(plan, neighbour, "kernel_seconds") / voxels(neighbour, plan.context)
             for _, _, neighbour in plan.face_neighbours(position)]
    return float(np.mean(rates)) * voxels(position, plan.odd_context)


def replay(plan, claims, choose) -> float:
    """Seconds between the two workers' ends with the recorded block times: the even blocks
    in grid order, then the odd block ``choose(ready, waiting, started, now)`` picks."""
    seconds = {p: recorded(plan, p) for p in claims.order}
    index = {plan.block_index(p): p for p in claims.order}
    free, ended, running = [0.0] * WORKERS, {}, [None] * WORKERS
    for position in (p for p in claims.order if not plan.is_odd(p)):
        worker = int(np.argmin(free))
        running[worker] = (position, free[worker])
        free[worker] += seconds[position]
        ended[position] = free[worker]
    left = [p for p in claims.order if plan.is_odd(p)]
    while left:
        worker = int(np.argmin(free))
        now = free[worker]
        ready = [p for p in left if all(ended[index[r]] <= now for r in claims.reads(p))]
        if not ready:  # wait for the even blocks the next odd block reads
            free[worker] = min(max(ended[index[r]] for r in claims.reads(p)) for p in left)
            continue
        started = dict(running[w] for w in range(WORKERS) if w != worker and free[w] > now)
        position = choose(ready, [p for p in left if p not in ready], started, now)
        left.remove(position)
        running[worker] = (position, now)
        free[worker] = now + seconds[position]
        ended[position] = free[worker]
    return max(free) - min(free)


def main() -> None:
    from napari_mutex_watershed.blockwise.odd_order import OddOrder

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crops", nargs="*", default=CROPS, metavar="Y,X")
    parser.add_argument("--biases", nargs="*", default=["0.5,0.7"], metavar="SHORT,LONG")
    args = parser.parse_args()
    if not DATA.exists():
        print(f"skipped: {DATA} is absent")
        return
    print("| crop | biases | odd blocks' kernel s | order of the odd blocks | correlation of "
          "its estimate | replayed end gap s | gap vs the neighbours' time |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for corner in args.crops:
            for text in args.biases:
                biases = tuple(float(v) for v in text.split(","))
                plan, claims, odd_step = compute_blocks(Path(tmp), corner, biases)
                plan = plan.model_copy(update={"num_workers": WORKERS})
                order = OddOrder(plan)
                odd = [p for p in claims.order if plan.is_odd(p)]
                own_box, first = compute_odd_again(plan, odd_step, odd)
                own = dict(zip(odd, own_box))
                actual = np.array([recorded(plan, p, "kernel_seconds") for p in odd])

                def longest(key):
                    return lambda ready, waiting, started, now: max(ready, key=key)

                def shipped(ready, waiting, started, now):
                    return order.order(ready, waiting,
                                       started if order.near_end(len(ready) + len(waiting))
                                       else None, now)[0]

                orders = {  # name: (estimate or None, choice)
                    "grid order": (None, longest(lambda p: -claims.order.index(p))),
                    "neighbours' time, longest first": (
                        lambda p: neighbours_time(plan, p),
                        longest(lambda p: neighbours_time(plan, p))),
                    "repulsive edges, most first": (order.expected_work,
                                                    longest(order.expected_work)),
                    "repulsive edges, soonest end near the end (shipped)": (
                        order.expected_work, shipped),
                    "repulsive edges of its own box, most first": (own.get, longest(own.get)),
                    "its own time, longest first": (
                        lambda p: recorded(plan, p), longest(lambda p: recorded(plan, p))),
                }
                gaps = {name: replay(plan, claims, choose)
                        for name, (_, choose) in orders.items()}
                before = gaps["neighbours' time, longest first"]
                for name, (estimate, _) in orders.items():
                    correlation = ("-" if estimate is None else
                                   f"{np.corrcoef([estimate(p) for p in odd], actual)[0, 1]:+.2f}")
                    ratio = gaps[name] / before if before else float("nan")
                    print(f"| {corner} | {text} | {actual.min():.2f} to {actual.max():.2f} | "
                          f"{name} | {correlation} | {gaps[name]:.2f} | {ratio:.2f} |",
                          flush=True)
                expected = np.array([order.expected_work(p) for p in odd])
                error = np.abs(expected * actual.mean() / expected.mean() - actual).mean()
                print(f"| {corner} | {text} | | the same block's kernel twice: mean difference "
                      f"{np.abs(actual - first).mean():.2f} s; the shipped estimate's error "
                      f"{error:.2f} s | | | |", flush=True)


if __name__ == "__main__":
    main()
