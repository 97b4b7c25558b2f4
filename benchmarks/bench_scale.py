"""What a blockwise run costs per block and what the one stitch process holds, at several
volume sizes, extrapolated to 10^12 voxels (docs/scale.md).

    python benchmarks/bench_scale.py                          # 128^3, 256^3, 512^3
    python benchmarks/bench_scale.py --sizes 128 256 --block 64 --workers 2
    python benchmarks/bench_scale.py --sizes 128 256 --noise 0.3   # more fragments

Each volume is a crop at (0, 0, 0) of the shared neuron labels (../shared/data/
pinky40_gt_half.npz, skipped when absent; 512^3 mirrors the 256 deep cutout along its first
axis, ``bench_blockwise.crop_labels``), with bench_blockwise's affinities (six offsets, blur
1, noise 0.1 or ``--noise`` with seed 1, uint8) and biases 0.5 / 0.7. Per size, in order:

1. the even and odd steps (real daisy workers), timed together; per-block kernel times
   come from the block records;
2. the stitch (``build_lookup``) alone, in a child process: its seconds, then (run again)
   its peak memory as tracemalloc counts it (numpy arrays and Python objects; the lookup
   table is a file), and the graph it built: nodes (fragments a join names), joins, the
   separations it loaded, all fragments;
3. the rest of the run (relabel and pyramid, resumed), timed.

The last table fits the stitch's nodes, edges and memory per voxel of face area and per
voxel, and extrapolates them to 10^12 voxels in blocks of the same size.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_blockwise import DATA, OFFSETS, crop_labels, write_crop

TARGET_VOXELS = 1e12
NOISE = 0.1  # bench_blockwise's
DAY = 86400.0


def stitch_child(plan_path: str) -> None:
    """Child: the stitch alone; one JSON line with its seconds, memory and summary."""
    from napari_mutex_watershed.blockwise.plan import BlockwisePlan
    from napari_mutex_watershed.blockwise.stitch import build_lookup, load_records

    plan = BlockwisePlan.load(plan_path)
    started = time.perf_counter()
    build_lookup(plan)  # timed alone: tracing slows Python code down
    seconds = time.perf_counter() - started
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    summary = build_lookup(plan)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _, joins, _, separated, _, _ = load_records(plan)
    nodes = np.unique(joins)
    summary.update(seconds=seconds, peak_mb=traced / 2**20, rss_mb=(peak - before) / 1024,
                   separations=separated.shape[1], nodes=len(nodes),
                   separations_kept=int((np.isin(separated[0], nodes)
                                         & np.isin(separated[1], nodes)).sum()))
    print(json.dumps(summary), flush=True)


def block_records(plan):
    """Per block: kernel seconds, colour (odd?), fragments, joins, separations."""
    rows = []
    for index in range(plan.num_blocks):
        position = np.unravel_index(index, plan.grid_shape)
        with np.load(plan.block_record(index)) as record:
            rows.append((float(record["kernel_seconds"]), plan.is_odd(position),
                         len(record["sizes"]) - 1, record["joins"].shape[1],
                         record["separated"].shape[1]))
    return np.array(rows)


def write_input(work: Path, size: int, noise: float) -> tuple:
    """bench_blockwise's affinities of the crop, with another noise level if asked (more
    noise, more fragments: a larger stitch graph)."""
    labels = crop_labels("0,0", size)
    if noise == NOISE:
        return write_crop(work, f"s{size}", labels, noise_seed=1)
    from napari_mutex_watershed import WatershedParameters
    from napari_mutex_watershed.storage import write_affinities
    from napari_mutex_watershed.synthetic import affinities_from_labels

    affinities = affinities_from_labels(labels, OFFSETS, sigma=1.0, noise=noise, seed=1,
                                        dtype=np.uint8)
    path = write_affinities(work / f"s{size}.zarr/affinities", affinities, OFFSETS)
    return path, WatershedParameters(offsets=OFFSETS, bias_short=0.5, bias_long=0.7)


def measure(size: int, block: int, workers: int, work: Path, noise: float,
            tiles=()) -> dict:
    from napari_mutex_watershed.blockwise.even_blocks import EvenBlocks
    from napari_mutex_watershed.blockwise.job import ProgressReporter, _run_tasks
    from napari_mutex_watershed.blockwise.launch import plan_run, segment_blockwise_zarr
    from napari_mutex_watershed.blockwise.odd_blocks import OddBlocks
    from napari_mutex_watershed.blockwise.plan import PLAN_FILE

    path, parameters = write_input(work, size, noise)
    output = work / f"s{size}-out.zarr/labels"
    options = {"block_size": (block,) * 3, "num_workers": workers, "progress": "none"}
    plan = plan_run(path, output, parameters, overwrite=True, **options)
    plan_path = str(Path(plan.work_dir) / PLAN_FILE)
    started = time.perf_counter()
    _run_tasks(plan, [EvenBlocks(plan_path).daisy_task(), OddBlocks(plan_path).daisy_task()],
               ProgressReporter("none", time.time()))
    fragment_seconds = time.perf_counter() - started
    records = block_records(plan)
    stitch = run_stitch(plan_path)
    tiled = {copies: run_stitch(tiled_plan(plan, copies, work)) for copies in tiles}
    started = time.perf_counter()
    segment_blockwise_zarr(path, output, parameters, supervised=False, **options)
    rest_seconds = time.perf_counter() - started
    return {"size": size, "blocks": plan.num_blocks, "fragment_seconds": fragment_seconds,
            "records": records, "stitch": stitch, "rest_seconds": rest_seconds, "tiled": tiled,
            "workers": workers, "block": block}


def face_area(size: int, block: int) -> float:
    """Voxels on the inner block faces of a size^3 volume in block^3 blocks (one side)."""
    cuts = -(-size // block) - 1
    return 3.0 * cuts * size * size


def tiled_plan(plan, copies: int, work: Path) -> str:
    """A plan of ``copies`` copies of ``plan``'s block grid one after the other along the
    first axis, each block's record copied with its joins moved to the copy's fragment ids
    (no join crosses from one copy to the next): the stitch of a volume ``copies`` times
    larger with the same density, without segmenting it. Returns the plan's path."""
    from napari_mutex_watershed.blockwise.plan import PLAN_FILE, BlockwisePlan

    tiled = BlockwisePlan.model_validate({
        **plan.model_dump(), "shape": (plan.shape[0] * copies, *plan.shape[1:]),
        "work_dir": str(work / f"tiled-{copies}")})
    per_block, depth = np.uint64(plan.ids_per_block), plan.grid_shape[0]
    for index in range(plan.num_blocks):
        with np.load(plan.block_record(index)) as record:
            arrays = {key: record[key] for key in record.files}
        blocks, local = np.divmod(arrays["joins"], per_block)
        position = np.array(np.unravel_index(blocks.astype(np.int64), plan.grid_shape))
        own = np.array(np.unravel_index(index, plan.grid_shape))
        for copy in range(copies):
            step = np.array([copy * depth] + [0] * (plan.ndim - 1))
            moved = np.ravel_multi_index(tuple(position + step.reshape(-1, 1, 1)),
                                         tiled.grid_shape).astype(np.uint64)
            record = tiled.block_record(int(np.ravel_multi_index(tuple(own + step),
                                                                 tiled.grid_shape)))
            record.parent.mkdir(parents=True, exist_ok=True)
            np.savez(record, **{**arrays, "joins": moved * per_block + local})
    tiled.save()
    return str(Path(tiled.work_dir) / PLAN_FILE)


def run_stitch(plan_path: str) -> dict:
    child = subprocess.run([sys.executable, __file__, "--stitch", plan_path],
                           capture_output=True, text=True, check=True)
    return json.loads(child.stdout.splitlines()[-1])


def print_tables(results: list[dict]) -> None:
    print("\n| volume | blocks | load (1 min) | even+odd s (workers) | kernel s per block: "
          "even median (p10-p90, max) / odd median (p10-p90, max) | block-seconds per block "
          "| relabel+pyramid s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        kernel, odd = r["records"][:, 0], r["records"][:, 1] > 0
        spread = " / ".join(
            f"{np.median(k):.2f} ({np.percentile(k, 10):.2f}-{np.percentile(k, 90):.2f}, "
            f"{k.max():.2f})" for k in (kernel[~odd], kernel[odd]))
        per_block = r["fragment_seconds"] * r["workers"] / r["blocks"]
        print(f"| {r['size']}^3 | {r['blocks']} | {r['load']:.1f} | "
              f"{r['fragment_seconds']:.1f} ({r['workers']}) | {spread} | {per_block:.2f} | "
              f"{r['rest_seconds']:.1f} |")
    print("\n| volume | fragments | stitch nodes | joins | separations loaded | stitch s | "
          "stitch peak MB (traced; RSS growth) | face area (voxels) | nodes per face voxel | "
          "MB per million face voxels |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = [(f"{r['size']}^3", r["stitch"], face_area(r["size"], r["block"])) for r in results]
    rows += [(f"{r['size']}^3 tiled x{copies}", s, copies * face_area(r["size"], r["block"]))
             for r in results for copies, s in r["tiled"].items()]
    for name, s, area in rows:
        print(f"| {name} | {s['fragments']:,} | {s['nodes']:,} | {s['joins']:,} | "
              f"{s['separations']:,} | {s['seconds']:.2f} | {s['peak_mb']:.0f}; "
              f"{s['rss_mb']:.0f} | {area:,.0f} | "
              f"{s['nodes'] / area:.4f} | {s['peak_mb'] / area * 1e6:.1f} |")
    for name, s, _ in rows:
        elements = s["nodes"] + s["joins"] + s["separations"]
        print(f"- {name}: {s['peak_mb'] * 2**20 / max(elements, 1):.0f} bytes traced and "
              f"{s['rss_mb'] * 2**20 / max(elements, 1):.0f} bytes of RSS per graph element "
              f"(node, join or separation loaded); {s['separations_kept']:,} of the "
              f"{s['separations']:,} separations have both ends at join nodes")
    largest = results[-1]
    s, block = largest["stitch"], largest["block"]
    side = TARGET_VOXELS ** (1 / 3)
    area = face_area(side, block)
    scale_area = area / face_area(largest["size"], block)
    scale_volume = TARGET_VOXELS / largest["size"] ** 3
    blocks = TARGET_VOXELS / block**3
    per_block = largest["fragment_seconds"] * largest["workers"] / largest["blocks"]
    relabel = largest["rest_seconds"] * largest["workers"] / largest["blocks"]
    stitch_seconds = s["seconds"] * scale_volume  # it reads every record and sizes every block
    worker_seconds = blocks * (per_block + relabel)
    print(f"\nExtrapolated to 10^12 voxels ({side:,.0f}^3) in {block}^3 blocks, from "
          f"{largest['size']}^3 (face area x{scale_area:,.0f}, voxels x{scale_volume:,.0f}):")
    print(f"- blocks: {blocks:,.0f}; fragments: {s['fragments'] * scale_volume:,.0f}")
    print(f"- stitch graph: {s['nodes'] * scale_area:,.0f} nodes, "
          f"{s['joins'] * scale_area:,.0f} joins, {s['separations'] * scale_area:,.0f} "
          f"separations loaded; peak memory {s['peak_mb'] * scale_area / 1024:,.0f} GB "
          f"(scaled with the face area)")
    print(f"- stitch time: about {stitch_seconds / 3600:,.1f} h (scaled with the voxels)")
    print(f"- block work: {worker_seconds / 3600:,.0f} core-hours "
          f"({per_block:.2f} s per even/odd block-step pair, {relabel:.3f} s relabel and "
          f"pyramid per block); for one day: {worker_seconds / max(DAY - stitch_seconds, 1):,.0f}"
          " workers")
    copies = max(largest["tiled"], default=1)  # the largest graph measured
    biggest = largest["tiled"][copies] if copies > 1 else s
    for memory_gb in (64, 256, 1024):
        # in blocks of one size the face area, and with it the graph, grows with the voxels
        voxels = [largest["size"] ** 3 * copies * memory_gb * 1024 / biggest[key]
                  for key in ("peak_mb", "rss_mb") if biggest[key] > 0]
        print(f"- one stitch process of {memory_gb} GB runs out at about "
              + " (traced) or ".join(f"{v:.1e} voxels ({v ** (1 / 3):,.0f}^3)" for v in voxels)
              + (" (RSS)" if len(voxels) == 2 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--noise", type=float, default=NOISE,
                        help="noise of the affinities (default bench_blockwise's 0.1)")
    parser.add_argument("--tile", type=int, nargs="*", default=[],
                        help="also stitch the largest volume's records copied this many times "
                        "along the first axis (e.g. 8 64): the stitch of larger volumes")
    parser.add_argument("--keep", action="store_true", help="keep the inputs and outputs")
    parser.add_argument("--stitch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stitch:
        return stitch_child(args.stitch)
    if not DATA.exists():
        print(f"skipped: {DATA} is absent")
        return None
    import os

    work = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    results = []
    try:
        for size in args.sizes:
            load = os.getloadavg()[0]
            tiles = args.tile if size == args.sizes[-1] else ()
            result = measure(size, args.block, args.workers, work, args.noise, tiles)
            result["load"] = max(load, os.getloadavg()[0])
            results.append(result)
            s = result["stitch"]
            print(f"{size}^3: even+odd {result['fragment_seconds']:.1f} s, stitch "
                  f"{s['seconds']:.2f} s {s['peak_mb']:.0f} MB ({s['nodes']:,} nodes, "
                  f"{s['joins']:,} joins), rest {result['rest_seconds']:.1f} s, load "
                  f"{result['load']:.1f}", flush=True)
        print_tables(results)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return None


if __name__ == "__main__":
    main()
