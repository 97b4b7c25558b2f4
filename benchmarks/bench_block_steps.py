"""Where a block's time outside the kernel goes, part by part, against another checkout.

    python benchmarks/bench_block_steps.py --compare ../old/src           # crop y 256, x 0
    python benchmarks/bench_block_steps.py --compare ../old/src --crop 256,256 --rounds 5

Every even and odd block of a 256^3 crop of the shared neuron labels (bench_blockwise's
affinities; skipped when ../shared/data is absent) is computed by the real steps in one
process, at the default block size. The kernel runs once, in a first pass of this checkout
whose labels are kept on disk; every later pass, of either checkout, hands each block those
labels at once (so the two must give the kernel the same input), and what is timed is
the rest of the block: the read, the weights, the labels, the separations, the seeds, the
records. Each part is timed around the function that does it, where the checkout has one;
a whole block's time holds the load of its stored labels too (a few ms).
The processes run with the workers' malloc settings (``freed_memory.REUSE_FREED_MEMORY``),
as a worker's blocks do. Rounds alternate the two checkouts, each in a fresh process of its
own with ``--passes`` passes over the blocks; the table gives, per part, the median over
rounds of the seconds per block and the ratio to the other checkout (``SRC``). Small parts
swing by a few milliseconds between rounds: a ratio means something when it holds in every
round (the last columns).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_blockwise import DATA, crop_labels, write_bytecode, write_crop
from bench_odd_order import open_block_steps

#: The parts timed: (module, function, the part's name). A checkout without one skips it.
PARTS = [
    ("napari_mutex_watershed.blockwise.task", "read_region", "read the block"),
    ("napari_mutex_watershed.blockwise.task", "edge_weights", "weights"),
    ("napari_mutex_watershed.blockwise.even_blocks", "finalize", "labels (even)"),
    ("napari_mutex_watershed.blockwise.odd_blocks", "finalize", "labels (odd)"),
    ("napari_mutex_watershed.blockwise.even_blocks", "separations", "separations (even)"),
    ("napari_mutex_watershed.blockwise.odd_blocks", "separations", "separations (odd)"),
    ("napari_mutex_watershed.blockwise.odd_blocks", "even_labels", "even labels (odd)"),
    ("napari_mutex_watershed.blockwise.odd_blocks", "seed_weights", "seed weights (odd)"),
    ("napari_mutex_watershed.blockwise.odd_blocks", "seed_joins", "seed joins (odd)"),
    ("napari_mutex_watershed.storage.chunk_files", "ChunkFiles.__setitem__", "write fragments"),
    ("napari_mutex_watershed.blockwise.task", "GridTask.save_record", "save the record"),
]


def child(crop: str, kernels: Path, passes: int) -> None:
    """One checkout's passes over the crop's blocks; prints the seconds per block by part."""
    import importlib

    from napari_mutex_watershed.blockwise import even_blocks, odd_blocks

    spent: dict[str, float] = {}

    def timed(function, name):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - started
        return wrapper

    for module_name, attribute, name in PARTS:
        owner = importlib.import_module(module_name)
        *classes, function = attribute.split(".")
        for class_name in classes:
            owner = getattr(owner, class_name, None)
        if owner is not None and hasattr(owner, function):
            setattr(owner, function, timed(getattr(owner, function), name))

    replaying = {"block": ""}

    def replayed(kernel):
        def run_kernel(weights, parameters, seeds=None):
            stored = kernels / f"{replaying['block']}.npy"
            if stored.exists():
                return np.load(stored)
            labels = kernel(weights, parameters, seeds)
            np.save(stored, labels)
            return labels
        return run_kernel

    even_blocks.run_kernel = replayed(even_blocks.run_kernel)
    odd_blocks.run_kernel = replayed(odd_blocks.run_kernel)
    with tempfile.TemporaryDirectory(prefix="bench_block_steps_") as folder:
        blocks = passes_over_blocks(Path(folder), crop, passes, spent, replaying)
    print(json.dumps({"blocks": blocks, "seconds": spent}))


def passes_over_blocks(work: Path, crop: str, passes: int, spent: dict, replaying: dict) -> dict:
    """Compute every block of the crop ``passes`` + 1 times, timing all but the first pass
    into ``spent``; the number of even and odd blocks timed."""
    path, parameters = write_crop(work, "crop", crop_labels(crop, 256), noise_seed=1)
    blocks = {"even": 0, "odd": 0}
    for number in range(passes + 1):  # pass 0 runs (or loads) the kernel: not counted
        plan, claims, steps = open_block_steps(path, work / f"pass{number}.zarr/labels",
                                               parameters)
        if number == 1:
            spent.clear()
        for position in claims.order:
            odd = plan.is_odd(position)
            replaying["block"] = ("odd_" if odd else "even_") + "_".join(map(str, position))
            started = time.perf_counter()
            steps[odd].compute(position)
            if number:
                colour = "odd" if odd else "even"
                name = f"whole {colour} block"
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - started
                blocks[colour] += 1
    return blocks


def run_child(crop: str, kernels: Path, passes: int, source: str | None) -> dict:
    """Seconds per block by part (a part of one colour's blocks per block of that colour)."""
    from napari_mutex_watershed.freed_memory import REUSE_FREED_MEMORY, TUNABLES_ENV

    env = {**os.environ, TUNABLES_ENV: REUSE_FREED_MEMORY,
           **({"PYTHONPATH": source} if source else {})}
    done = subprocess.run([sys.executable, __file__, "--child", crop, str(kernels),
                           str(passes)], capture_output=True, text=True, env=env, check=True)
    result = json.loads(done.stdout.splitlines()[-1])
    blocks = result["blocks"]
    if not passes:
        return {}

    def count(name: str) -> int:
        colour = next((c for c in blocks if f"({c})" in name or f" {c} block" in name), None)
        return blocks[colour] if colour else sum(blocks.values())

    return {name: seconds / count(name) for name, seconds in result["seconds"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--compare", metavar="SRC",
                        help="the other checkout's src (e.g. the code before a change)")
    parser.add_argument("--crop", default="256,0", help="y,x corner of the 256^3 crop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=2, help="passes over the blocks a round")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), int(args.child[2]))
        return
    if not args.compare:
        parser.error("--compare SRC is required")
    if not DATA.exists():
        print(f"skipped: {DATA} is absent")
        return
    write_bytecode(args.compare)
    rounds: dict[str, list[dict]] = {"": [], "SRC": []}
    with tempfile.TemporaryDirectory(prefix="bench_block_steps_kernels_") as kernels:
        run_child(args.crop, Path(kernels), 0, None)  # the kernel's labels, once
        for number in range(args.rounds):
            for label in (("", "SRC") if number % 2 == 0 else ("SRC", "")):
                rounds[label].append(run_child(args.crop, Path(kernels), args.passes,
                                               args.compare if label else None))
    names = [name for _, _, name in PARTS] + ["whole even block", "whole odd block"]
    print(f"\ncrop y,x {args.crop}, 256^3, default blocks; {args.rounds} rounds of "
          f"{args.passes} passes, the kernel replayed; ms per block (even or odd where named)\n")
    print("| part | this checkout ms | SRC ms | ratio | ratio in each round |")
    print("|---|---|---|---|---|")
    for name in names:
        ours = [r[name] for r in rounds[""] if name in r]
        theirs = [r[name] for r in rounds["SRC"] if name in r]
        if not ours and not theirs:
            continue
        if not ours or not theirs:
            print(f"| {name} | {1e3 * statistics.median(ours):.1f} | - | - | - |" if ours
                  else f"| {name} | - | {1e3 * statistics.median(theirs):.1f} | - | - |")
            continue
        each = ", ".join(f"{a / b:.2f}" for a, b in zip(ours, theirs))
        print(f"| {name} | {1e3 * statistics.median(ours):.1f} | "
              f"{1e3 * statistics.median(theirs):.1f} | "
              f"{statistics.median(ours) / statistics.median(theirs):.2f}x | {each} |")


if __name__ == "__main__":
    main()
