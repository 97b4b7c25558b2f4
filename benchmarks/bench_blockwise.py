"""Blockwise runs against one whole-volume call, on several inputs, in one table: speed-up,
kernel time, time outside the kernel, a timeline per step, memory and quality.

    python benchmarks/bench_blockwise.py                    # two 256^3 crops and the sample
    python benchmarks/bench_blockwise.py --blocks default 128 64x128x128
    python benchmarks/bench_blockwise.py --crops 256,256 0,256 --no-sample
    python benchmarks/bench_blockwise.py --memory           # and 512^3: is the peak flat?
    python benchmarks/bench_blockwise.py --memory 2x        # and 512 x 256 x 256
    python benchmarks/bench_blockwise.py --seams            # and where blocks split objects
    python benchmarks/bench_blockwise.py --compare ../old/src  # and another checkout's rows
    python benchmarks/bench_blockwise.py --chains           # and which worker ran which block

Crops (y,x corners, all 256 deep) come from real neuron labels (../shared/data/
pinky40_gt_half.npz, skipped when absent); their affinities: offsets (1,0,0) (0,1,0) (0,0,1)
(3,0,0) (0,9,0) (0,0,9), Gaussian blur sigma 1, noise 0.1, clip, uint8 in 32^3 chunks. The
sample is ``napari-mutex-watershed sample`` (64x128x128, float32, its own offsets).

The baseline of each input is one ``segment()`` call on the whole array in a process of its
own (the "bare call": its time excludes imports and I/O). Blockwise runs are the CLI, timed
from its start to its exit. Kernel time is mwatershed's, summed over blocks; outside the
kernel is 1 - kernel / workers / wall (1 - kernel / wall when the region is one block);
"with no idle worker" is the same share over the wall time less the workers' idle time, the
floor no order of the blocks can go below.
The timeline is when each step ended, in seconds from the command's start: start-up (the
job's first progress line), even, odd, stitch, relabel, pyramid and the exit. Peak memory
(``tree_memory``, every 50 ms): the largest worker's RSS, the job process's, and the whole
tree's RSS and PSS (PSS counts shared pages once); ``--memory`` adds a table by role.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import zarr
from block_chains import BlockChains
from tree_memory import TreeMemory

from napari_mutex_watershed.attributes import BLOCK_SIZE_ATTR

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pinky40_gt_half.npz"
OFFSETS = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (3, 0, 0), (0, 9, 0), (0, 0, 9)]
CROPS = ["256,256", "256,0"]
CROP_DEPTH = 256
STEPS = ("even", "odd", "stitch", "relabel", "pyramid")
#: ``--compare``: which checkout runs first alternates from row to row.
TURNS = itertools.count()
#: ``--memory``: depth and width of the larger volumes, the first crop mirrored in depth.
LARGER = {"2x": (2 * CROP_DEPTH, CROP_DEPTH), "8x": (2 * CROP_DEPTH, 2 * CROP_DEPTH),
          "16x": (4 * CROP_DEPTH, 2 * CROP_DEPTH)}


# ---------------------------------------------------------------------------- inputs
def crop_labels(corner: str, size: int, width: int | None = None) -> np.ndarray:
    """A size x width x width crop (width: size) at (0, y, x) of the shared labels (moved
    back to fit); a larger size mirrors the 256 deep cutout along its first axis, back and
    forth, to make a volume of the same kind."""
    labels = np.load(DATA)["labels"]
    width = width or size
    y, x = (min(int(v), n - width) for v, n in zip(corner.split(","), labels.shape[1:]))
    labels = labels[:, y : y + width, x : x + width]
    while size > labels.shape[0]:
        labels = np.concatenate([labels, labels[::-1]])
    return np.ascontiguousarray(labels[:size])


def write_crop(work: Path, name: str, labels: np.ndarray, noise_seed: int, context=None) -> tuple:
    from napari_mutex_watershed import WatershedParameters
    from napari_mutex_watershed.storage import write_affinities
    from napari_mutex_watershed.synthetic import affinities_from_labels

    affinities = affinities_from_labels(labels, OFFSETS, sigma=1.0, noise=0.1, seed=noise_seed,
                                        dtype=np.uint8)
    slug = "".join(c if c.isalnum() else "_" for c in name)
    path = write_affinities(work / f"{slug}.zarr/affinities", affinities, OFFSETS)
    return path, WatershedParameters(offsets=OFFSETS, bias_short=0.5, bias_long=0.7,
                                     context=context)


def write_sample_input(work: Path) -> tuple:
    from napari_mutex_watershed import WatershedParameters
    from napari_mutex_watershed.synthetic import write_sample

    paths = write_sample(work / "sample.zarr")
    truth = zarr.open_array(str(paths["ground_truth"]))[:]
    return paths["affinities"], WatershedParameters(offsets=paths["offsets"]), truth


# ---------------------------------------------------------------------------- running
def write_bytecode(*sources) -> None:
    """Compile this package (and the ``--compare`` checkout) as an install does: where
    writing bytecode is off (PYTHONDONTWRITEBYTECODE) every process would otherwise compile
    our modules again, about 0.07 s each, which no installed copy pays."""
    import compileall

    import napari_mutex_watershed

    for folder in (Path(napari_mutex_watershed.__file__).parent, *filter(None, sources)):
        compileall.compile_dir(str(folder), quiet=1)


def timed_lines(command: list[str], watcher=None, env=None) -> tuple[float, list, object]:
    """Run a command; its wall seconds, its stdout lines, each with the second it arrived,
    and ``watcher(pid)``, a context manager held while it runs (None: nothing polls it)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    lines = []

    def read():
        for line in process.stdout:
            lines.append((time.perf_counter() - started, line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with watcher(process.pid) if watcher else contextlib.nullcontext() as watching:
        process.wait()
    seconds = time.perf_counter() - started
    reader.join()
    if process.returncode:
        raise RuntimeError(f"{command} failed:\n{process.stderr.read()}")
    return seconds, lines, watching


def watch(command: list[str], full_memory: bool = False, env=None) -> dict:
    """Run a command; its wall seconds, its memory (``tree_memory``: "memory" by role, peak
    "worker" and "job" RSS and "tree" RSS / PSS, GB; PSS only with ``full_memory``, whose
    sampling takes CPU from the run), and its stdout lines, each with the second it
    arrived."""
    seconds, lines, memory = timed_lines(
        command, lambda pid: TreeMemory(pid, full=full_memory), env)
    summary = memory.summary()
    roles = summary["roles"]
    return {"seconds": seconds, "lines": lines, "memory": summary,
            "worker": max([v["one"]["rss"] for r, v in roles.items() if r.startswith("worker")]
                          or [float("nan")]),
            "job": roles.get("job", {"one": {"rss": float("nan")}})["one"]["rss"],
            "one": max(v["one"]["rss"] for v in roles.values()), "tree": summary["tree"]}


def bare_call(path: str, output: str, parameters_json: str) -> None:
    """Child: the baseline, one segment() over the whole array."""
    from napari_mutex_watershed import WatershedParameters, segment
    from napari_mutex_watershed.storage import open_affinities, write_labels

    data = open_affinities(path).array.data.compute()
    parameters = WatershedParameters.from_json(parameters_json)
    started = time.perf_counter()
    labels = segment(data, parameters)
    print(json.dumps({"bare_seconds": time.perf_counter() - started}), flush=True)
    write_labels(output, labels, overwrite=True)


def timeline(lines: list, wall: float) -> dict:
    """When each step ended (seconds from the command's start), from the progress lines."""
    progress = [(t, json.loads(line)) for t, line in lines if line.startswith("{")]
    ends = {"start-up": progress[0][0] if progress else wall}
    for step in STEPS:
        done = [t for t, p in progress if str(p["phase"]).startswith(step)
                and p["done"] == p["total"]]
        if done:
            ends[step] = max(done)
    ends["exit"] = wall
    summary = next((p for _, p in reversed(progress) if p["phase"] == "done"), {})
    return {"ends": ends, "kernel": summary.get("kernel_seconds", float("nan")),
            "in_blocks": summary.get("block_seconds"), "blocks": summary.get("blocks", 0),
            "fragments": summary.get("fragments")}


def outside_parts(line: dict, wall: float, parallel: int) -> tuple[str, str]:
    """Where the wall time outside the kernel goes, in seconds: before the first step starts
    (CLI, job process, validation), inside blocks but outside the kernel (reading, weights,
    records), workers idle while blocks are under way (worker starts, the wait for the last
    block of a step), and after the last block (stitch, relabel, pyramid, exit); and the
    share outside the kernel had no worker been idle, the floor no order of the blocks can
    go below."""
    ends, kernel, in_blocks = line["ends"], line["kernel"], line["in_blocks"]
    last_block = ends.get("odd")
    if in_blocks is None or last_block is None:
        return "-", "-"
    start = ends["start-up"]
    idle = last_block - start - in_blocks / parallel
    floor = 1 - kernel / parallel / (wall - idle)
    return (f"{start:.1f} / {(in_blocks - kernel) / parallel:.1f} / {idle:.1f} / "
            f"{wall - last_block:.1f}", f"{floor:.1%}")


def scores(truth, segmentation) -> tuple[float, float]:
    from skimage.metrics import adapted_rand_error, variation_of_information

    arand = adapted_rand_error(truth, segmentation, ignore_labels=(0,))[0]
    return arand, float(sum(variation_of_information(truth, segmentation, ignore_labels=(0,))))


def seam_splits(truth, segmentation, block_size) -> tuple[int, int]:
    """(objects split at a block face, objects crossing a face): split when most of an
    object's voxel pairs straddling the face get different ids on the two sides."""
    split = crossing = 0
    for axis, step in enumerate(block_size):
        for plane in range(step, truth.shape[axis], step):
            a = np.take(truth, plane - 1, axis=axis).ravel()
            b = np.take(truth, plane, axis=axis).ravel()
            sa = np.take(segmentation, plane - 1, axis=axis).ravel()
            sb = np.take(segmentation, plane, axis=axis).ravel()
            same = (a == b) & (a != 0)
            ids, inverse = np.unique(a[same], return_inverse=True)
            disagree = np.bincount(inverse, weights=sa[same] != sb[same], minlength=len(ids))
            split += int((disagree > np.bincount(inverse, minlength=len(ids)) / 2).sum())
            crossing += len(ids)
    return split, crossing


# ---------------------------------------------------------------------------- table
HEADER = ("| input | run | wall s | speed-up vs bare call | kernel s (summed) | outside kernel | "
          "outside the kernel s: start / in blocks / idle / after | outside with no idle worker | "
          "timeline s: start-up / even / odd / stitch / relabel / pyramid / exit | "
          "peak GB: worker / job process | peak tree GB: RSS / PSS | ARAND (diff) | VOI (diff) |")


def print_row(name, run, result, bare, workers, quality, reference) -> None:
    line = timeline(result["lines"], result["seconds"])
    wall, kernel = result["seconds"], line["kernel"]
    parallel = workers if line["blocks"] != 1 else 1
    outside = 1 - kernel / parallel / wall
    parts, floor = outside_parts(line, wall, parallel)
    ends = " / ".join(f"{line['ends'][step]:.1f}" if step in line["ends"] else "-"
                      for step in ("start-up", *STEPS, "exit"))
    arand, voi = quality
    diff = (f" ({arand - reference[0]:+.4f})", f" ({voi - reference[1]:+.3f})") if reference \
        else ("", "")
    speed = f"{bare / wall:.2f}x" if bare else "-"
    print(f"| {name} | {run} | {wall:.1f} | {speed} | {kernel:.1f} | {outside:.1%} | "
          f"{parts} | {floor} | {ends} | "
          f"{result['worker']:.2f} / {result['job']:.2f} | {tree_text(result)} | "
          f"{arand:.4f}{diff[0]} | "
          f"{voi:.3f}{diff[1]} |", flush=True)


def tree_text(result: dict) -> str:
    """The tree's peak RSS / PSS (GB); PSS is sampled only with --memory."""
    tree = result["tree"]
    return f"{tree['rss']:.2f} / " + (f"{tree['pss']:.2f}" if result["memory"]["full"] else "-")


def print_roles(memory: list) -> None:
    """Per run and role: how many processes at once, the peak of one (RSS / PSS / USS) and
    of all of them at once (PSS); per run the tree's peak, what it was made of, and the
    fragments the job process's stitch numbered."""
    print("\n| input | run | role | alive at once | one process GB: RSS / PSS / USS | "
          "all of the role at once, PSS GB |\n" + "|---" * 6 + "|")
    for name, run, summary, fragments in memory:
        for role, values in summary["roles"].items():
            one = values["one"]
            if role == "job" and fragments:
                role = f"job ({fragments:,} fragments)"
            print(f"| {name} | {run} | {role} | {values['alive']} | {one['rss']:.2f} / "
                  f"{one['pss']:.2f} / {one['uss']:.2f} | {values['together']['pss']:.2f} |")
        tree = summary["tree"]
        made_of = ", ".join(f"{role} {n} x {pss:.2f}"
                            for role, (n, pss) in summary["at_tree_peak"].items())
        print(f"| {name} | {run} | **tree** (at its PSS peak: {made_of}) | | {tree['rss']:.2f} "
              f"/ {tree['pss']:.2f} / {tree['uss']:.2f} | |")


# ---------------------------------------------------------------------------- main
def block_option(text: str) -> list[str]:
    """``default`` (no --block-size), ``128`` or ``64x128x128`` as CLI arguments."""
    if text == "default":
        return []
    sizes = text.split("x")
    return ["--block-size", *(sizes * 3 if len(sizes) == 1 else sizes)]


def bench_input(args, work: Path, name: str, path, parameters, truth, memory: list) -> dict:
    """Print the input's rows; return its seam splits per block size (``--seams``); add
    (input, run, memory by role) of each blockwise run to ``memory``."""
    slug = "".join(c if c.isalnum() else "_" for c in name)
    params_file = work / f"{slug}.json"
    parameters.save(params_file)
    bare, reference, seams = None, None, {}
    if not args.skip_whole:
        child = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                 f"import bench_blockwise as b; b.bare_call({str(path)!r}, "
                 f"{str(work / f'{slug}-whole.zarr/labels')!r}, open({str(params_file)!r}).read())")
        result = watch([sys.executable, "-c", child], args.memory is not None)
        bare = json.loads(result["lines"][0][1])["bare_seconds"]
        whole = zarr.open_array(str(work / f"{slug}-whole.zarr/labels"))[:]
        reference = scores(truth, whole)
        print(f"| {name} | whole volume, 1 process (bare call {bare:.1f} s) | "
              f"{result['seconds']:.1f} | - | - | - | - | - | {result['one']:.2f} (one "
              f"process) | {tree_text(result)} | "
              f"{reference[0]:.4f} | {reference[1]:.3f} |", flush=True)
    checkouts = [("", None)] + ([(" (SRC)", args.compare)] if args.compare else [])
    for blocks in args.blocks:
        # with --compare, the two checkouts take turns to run first
        for label, source in checkouts if next(TURNS) % 2 == 0 else checkouts[::-1]:
            output = work / f"{slug}-{blocks}.zarr/labels"
            env = None if source is None else {**os.environ, "PYTHONPATH": source}
            chains = BlockChains.of_output(output) if args.chains else None
            started = time.time()
            with chains or contextlib.nullcontext():
                result = watch([sys.executable, "-m", "napari_mutex_watershed.cli", "segment",
                                str(path), str(output), "--params", str(params_file),
                                "--workers", str(args.workers), "--progress", "json",
                                *block_option(blocks)], args.memory is not None, env)
            segmentation = zarr.open_array(str(output / "0"))[:]
            shape = "x".join(map(str, zarr.open_group(str(output)).attrs[BLOCK_SIZE_ATTR]))
            run = f"{blocks} blocks ({shape}), {args.workers} workers{label}"
            print_row(name, run, result, bare, args.workers, scores(truth, segmentation),
                      reference)
            if chains:
                print("\n" + chains.text(started) + "\n", flush=True)
            memory.append((name, run, result["memory"],
                           timeline(result["lines"], result["seconds"])["fragments"]))
            if args.seams and blocks != "default" and source is None:
                size = [int(v) for v in block_option(blocks)[1:]]
                split, crossing = seam_splits(truth, segmentation, size)
                seams[(name, blocks)] = f"{split}/{crossing}"
            shutil.rmtree(output.parent, ignore_errors=True)
    return seams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--crops", nargs="*", default=CROPS, metavar="Y,X",
                        help="corners of 256^3 crops of the shared labels")
    parser.add_argument("--size", type=int, default=CROP_DEPTH, help="edge of the crops")
    parser.add_argument("--no-sample", action="store_true")
    parser.add_argument("--blocks", nargs="+", default=["default"],
                        help="block sizes: default, 128, 64x128x128 ...")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-whole", action="store_true",
                        help="no whole-volume call (no speed-up, no quality difference)")
    parser.add_argument("--memory", nargs="*", choices=sorted(LARGER),
                        help="also the first crop mirrored to larger volumes (8x: 512^3, the "
                        "default; 2x: 512 x 256 x 256; 16x: 1024 x 512 x 512), blockwise "
                        "only; and the memory of every blockwise run by role")
    parser.add_argument("--seams", action="store_true")
    parser.add_argument("--noise-seed", type=int, default=1)
    parser.add_argument("--context", type=int, nargs=3, metavar=("Z", "Y", "X"),
                        help="halo of the even blocks on the crops instead of the default")
    parser.add_argument("--keep", action="store_true", help="keep inputs and outputs")
    parser.add_argument("--chains", action="store_true",
                        help="after each blockwise row, which worker ran which block when "
                        "(block_chains.py): waits between blocks and at the end; a thread "
                        "of this process reads the blocks' records every 20 ms meanwhile")
    parser.add_argument("--compare", metavar="SRC",
                        help="also run every blockwise row with another checkout's command "
                        "(PYTHONPATH=SRC, e.g. the code before a change), rows marked (SRC)")
    args = parser.parse_args()
    write_bytecode(args.compare)
    work = Path(tempfile.mkdtemp(prefix="bench_blockwise_"))
    seams, memory = {}, []
    print(f"load before: {psutil.getloadavg()}\n\n{HEADER}\n"
          + "|---" * (HEADER.count("|") - 1) + "|", flush=True)
    try:
        if not args.no_sample:
            path, parameters, truth = write_sample_input(work)
            seams |= bench_input(args, work, "sample 64x128x128", path, parameters, truth,
                                 memory)
        crops = [(c, args.size, args.size) for c in args.crops] + (
            [(args.crops[0], *LARGER[size]) for size in args.memory or ["8x"]]
            if args.memory is not None else [])
        if not DATA.exists():
            print(f"\ncrops skipped: {DATA} is absent")
            crops = []
        for repeat, (corner, size, width) in enumerate(crops):
            truth = crop_labels(corner, size, width)
            name = f"crop {corner} " + (f"{size}^3" if size == width else f"{size}x{width}^2")
            if (corner, size, width) in crops[:repeat]:  # a crop given again: a repeat
                name += f", run {crops[:repeat].count((corner, size, width)) + 1}"
            path, parameters = write_crop(work, name, truth, args.noise_seed, args.context)
            # larger: blockwise only (a whole-volume call would need 16 to 70 GB)
            larger = {"skip_whole": True} if size > CROP_DEPTH else {}
            seams |= bench_input(argparse.Namespace(**{**vars(args), **larger}), work, name,
                                 path, parameters, truth, memory)
    finally:
        print(f"\nload after: {psutil.getloadavg()}")
        if args.memory is not None:
            print_roles(memory)
        for key, value in seams.items():
            print(f"seam splits {key}: {value}")
        if args.keep:
            print(f"inputs and outputs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
