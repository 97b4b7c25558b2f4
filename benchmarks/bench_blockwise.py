"""Blockwise against one whole-volume call: quality, seams, wall time, memory and the
time the OME-Zarr pyramid adds.

    python benchmarks/bench_blockwise.py                 # 256^3 crop of the shared neuron labels
    python benchmarks/bench_blockwise.py --size 128      # quicker
    python benchmarks/bench_blockwise.py --scale 512 512 512   # end-to-end on uint8 sample data
    python benchmarks/bench_blockwise.py --keep          # keep inputs and outputs in /tmp

Affinities are derived from real neuron labels (../shared/data/pinky40_gt_half.npz): offsets
(1,0,0) (0,1,0) (0,0,1) (3,0,0) (0,9,0) (0,0,9), Gaussian blur sigma 1, noise 0.1, clip [0, 1].
Every run happens in its own process so peak memory (RSS of the whole process tree) is clean.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import zarr

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pinky40_gt_half.npz"
OFFSETS = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (3, 0, 0), (0, 9, 0), (0, 0, 9)]


def load_crop(size: int) -> np.ndarray:
    """A size^3 crop where the cutout is densely labelled (its first corner is nearly empty)."""
    labels = np.load(DATA)["labels"]
    return np.ascontiguousarray(labels[:size, 256 : 256 + size, 256 : 256 + size])


def watch(command: list[str]) -> tuple[float, float, float, str]:
    """Run a command; return (seconds, peak tree RSS GB, peak single-process RSS GB, stdout)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    root = psutil.Process(process.pid)
    peak_tree = peak_one = 0
    while process.poll() is None:
        try:
            tree = [root] + root.children(recursive=True)
            rss = [p.memory_info().rss for p in tree if p.is_running()]
        except psutil.Error:
            continue
        peak_tree, peak_one = max(peak_tree, sum(rss)), max(peak_one, max(rss))
        time.sleep(0.05)
    out = process.stdout.read()
    if process.returncode:
        raise RuntimeError(f"{command} failed:\n{out}")
    return time.perf_counter() - started, peak_tree / 1e9, peak_one / 1e9, out


def whole_volume(path: str, output: str, parameters_json: str) -> None:
    """Child: the reference, one segment() over the whole array."""
    from napari_mutex_watershed import WatershedParameters, segment
    from napari_mutex_watershed.storage import open_affinities, write_labels

    affinities = open_affinities(path)
    data = affinities.array.data.compute()
    parameters = WatershedParameters.from_json(parameters_json)
    started = time.perf_counter()
    labels = segment(data, parameters)
    print(json.dumps({"kernel_and_engine_seconds": time.perf_counter() - started}))
    write_labels(output, labels, overwrite=True)


def pyramid_seconds(progress: str) -> float:
    """What the pyramid adds to a run: from the last relabelled block to the last pyramid
    block (its levels are piped after relabel, so the part that overlaps relabel is free)."""
    lines = [json.loads(line) for line in progress.splitlines() if line.startswith("{")]
    relabelled = min(p["elapsed"] for p in lines
                     if p["phase"] == "relabel" and p["done"] == p["total"])
    pyramid = [p["elapsed"] for p in lines if str(p["phase"]).startswith("pyramid")]
    return max(max(pyramid, default=relabelled) - relabelled, 0.0)


def scores(truth, segmentation) -> tuple[float, float, float]:
    from skimage.metrics import adapted_rand_error, variation_of_information

    arand = adapted_rand_error(truth, segmentation, ignore_labels=(0,))[0]
    split, merge = variation_of_information(truth, segmentation, ignore_labels=(0,))
    return arand, split, merge


def seam_splits(truth, segmentation, block_size, off_faces=False) -> tuple[set, int, float]:
    """(the (axis, plane, object) split at a block face, how many objects cross a face, the
    share of all straddling voxel pairs that belong to a split crossing): an object is split
    at a face when most of its voxel pairs straddling that face get different ids on the two
    sides. The share weighs each split by its contact area, so a thin branch counts little.

    With `off_faces`, the planes lie half a block past the faces: they show how often the
    same segmentation splits objects at planes where no block face is."""
    split, crossing, pairs, split_pairs = set(), 0, 0, 0
    for axis, step in enumerate(block_size):
        for plane in range(step // 2 if off_faces else step, truth.shape[axis], step):
            a = np.take(truth, plane - 1, axis=axis).ravel()
            b = np.take(truth, plane, axis=axis).ravel()
            sa = np.take(segmentation, plane - 1, axis=axis).ravel()
            sb = np.take(segmentation, plane, axis=axis).ravel()
            same = (a == b) & (a != 0)
            ids, inverse = np.unique(a[same], return_inverse=True)
            disagree = np.bincount(inverse, weights=sa[same] != sb[same], minlength=len(ids))
            total = np.bincount(inverse, minlength=len(ids))
            is_split = disagree > total / 2
            crossing += len(ids)
            pairs += int(total.sum())
            split_pairs += int(total[is_split].sum())
            split.update((axis, plane, int(i)) for i in ids[is_split])
    return split, crossing, split_pairs / max(pairs, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--blocks", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--bias-short", type=float, default=0.5)
    parser.add_argument("--bias-long", type=float, default=0.7)
    parser.add_argument("--scale", type=int, nargs=3, action="append", metavar=("Z", "Y", "X"),
                        help="instead: end-to-end runs on uint8 sample data of these shapes "
                        "(repeat the option to compare sizes)")
    parser.add_argument("--skip-whole", action="store_true")
    parser.add_argument("--context", type=int, nargs=3, metavar=("Z", "Y", "X"),
                        help="halo of the even blocks instead of the default, to weigh quality "
                        "against time")
    parser.add_argument("--noise-seed", type=int, default=1,
                        help="seed of the noise added to the derived affinities: repeat the "
                        "benchmark with other seeds to see how much the scores move by chance")
    parser.add_argument("--keep", action="store_true",
                        help="keep the inputs and outputs (about 0.8 GB per run) instead of "
                        "deleting them at the end")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_blockwise_"))
    try:
        run(args, work)
    finally:
        if args.keep:
            print(f"\ninputs and outputs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path) -> None:
    from napari_mutex_watershed import WatershedParameters
    from napari_mutex_watershed.storage import write_affinities
    from napari_mutex_watershed.synthetic import affinities_from_labels, sample_volume

    parameters = WatershedParameters(offsets=OFFSETS, bias_short=args.bias_short, bias_long=args.bias_long,
                                     context=args.context)
    params_file = work / "params.json"
    parameters.save(params_file)
    cli = [sys.executable, "-m", "napari_mutex_watershed.cli"]

    if args.scale:
        print("| volume | workers | block | wall s | peak tree GB | peak process GB |")
        print("|---|---|---|---|---|---|")
        for shape in args.scale:
            affs, _, offsets = sample_volume(tuple(shape), dtype=np.uint8)
            write_affinities(work / "in.zarr/affinities", affs, offsets, overwrite=True)
            del affs
            seconds, tree, one, _ = watch(cli + ["segment", str(work / "in.zarr/affinities"),
                                                 str(work / "out.zarr/labels"), "--params", str(params_file),
                                                 "--workers", str(args.workers), "--progress", "none",
                                                 "--overwrite"])
            print(f"| {'x'.join(map(str, shape))} uint8, 6 offsets | {args.workers} | 64^3 | "
                  f"{seconds:.1f} | {tree:.2f} | {one:.2f} |", flush=True)
        return

    if not DATA.exists():
        print(f"skipped: {DATA} is absent")
        return
    truth = load_crop(args.size)
    affs = affinities_from_labels(truth, OFFSETS, sigma=1.0, noise=0.1, seed=args.noise_seed)
    write_affinities(work / "in.zarr/affinities", affs, OFFSETS)
    del affs
    rows = []
    if not args.skip_whole:
        seconds, tree, one, out = watch([sys.executable, "-c",
            "import sys; sys.path.insert(0, %r); import bench_blockwise as b; "
            "b.whole_volume(%r, %r, open(%r).read())" % (str(Path(__file__).parent),
            str(work / "in.zarr/affinities"), str(work / "whole.zarr/labels"), str(params_file))])
        whole = zarr.open_array(str(work / "whole.zarr/labels"))[:]
        rows.append(("whole volume, 1 process", seconds, tree, one, whole, None, (args.size,) * 3))
    for block in args.blocks:
        output = work / f"b{block}.zarr/labels"
        seconds, tree, one, out = watch(cli + ["segment", str(work / "in.zarr/affinities"), str(output),
                                               "--params", str(params_file), "--workers", str(args.workers),
                                               "--block-size", *[str(block)] * 3, "--progress", "json"])
        summary = json.loads([line for line in out.splitlines() if '"done"' in line and '"phase": "done"' in line][-1])
        summary["pyramid_seconds"] = pyramid_seconds(out)
        rows.append((f"blockwise {block}^3, {args.workers} workers", seconds, tree, one,
                     zarr.open_array(str(output / "0"))[:], summary, (block,) * 3))

    baseline = rows[0][1] if not args.skip_whole else None
    print(f"\n{args.size}^3 crop of pinky40 labels ({len(np.unique(truth)) - 1} objects), biases "
          f"{args.bias_short}/{args.bias_long}, noise seed {args.noise_seed}, "
          f"context {parameters.context_voxels()}\n")
    print("| run | wall s | speed-up | outside kernel | pyramid s (share of wall) | peak tree GB | peak process GB | ARAND | VOI split | VOI merge | VOI | seam splits (whole's at same faces; of them not split by whole); share of face contact split | splits at planes half a block off the faces (whole's) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, seconds, tree, one, seg, summary, block in rows:
        arand, split, merge = scores(truth, seg)
        outside = pyramid = "-"
        seams = off_faces = "-"
        if summary:
            outside = f"{1 - summary['kernel_seconds'] / args.workers / seconds:.1%}"
            pyramid = f"{summary['pyramid_seconds']:.1f} ({summary['pyramid_seconds'] / seconds:.1%})"
            s, c, contact = seam_splits(truth, seg, block)
            seams = f"{len(s)}/{c} = {len(s) / max(c, 1):.2%}"
            if not args.skip_whole:
                sw, _, whole_contact = seam_splits(truth, rows[0][4], block)
                seams += f" ({len(sw)}; {len(s - sw)}); {contact:.2%} ({whole_contact:.2%})"
            else:
                seams += f"; {contact:.2%}"
            s, c, _ = seam_splits(truth, seg, block, off_faces=True)
            off_faces = f"{len(s)}/{c} = {len(s) / max(c, 1):.2%}"
            if not args.skip_whole:
                sw, cw, _ = seam_splits(truth, rows[0][4], block, off_faces=True)
                off_faces += f" ({len(sw) / max(cw, 1):.2%})"
        speed = f"{baseline / seconds:.2f}x" if baseline else "-"
        print(f"| {name} | {seconds:.1f} | {speed} | {outside} | {pyramid} | {tree:.2f} | {one:.2f} | {arand:.4f} | {split:.3f} | {merge:.3f} | {split + merge:.3f} | {seams} | {off_faces} |")


if __name__ == "__main__":
    main()
