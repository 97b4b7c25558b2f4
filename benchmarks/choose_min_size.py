"""How the minimum segment size changes a segmentation: the measurement behind its default.

    python benchmarks/choose_min_size.py               # sample + two 128^3 crops of the shared data
    python benchmarks/choose_min_size.py --size 256    # larger crops (about a minute per kernel call)

For each input the kernel runs once per bias pair; every min_size is then applied by the
engine's own ``finalize`` (what ``segment`` does after the kernel), so the rows differ only in
the size filter. Per min_size: segments per ground-truth object, single-voxel segments, the
fraction of labelled ground-truth voxels set to background, adapted Rand error and variation of
information (ground truth 0 ignored; background in the result counts as one segment, so a
filter that drops too much shows up as merge error), and the adapted Rand error over the voxels
the result labels ("ARAND labelled": the grouping alone). Shared data: ../shared/data (skipped when
absent); affinities derived as in bench_blockwise.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.engine import edge_weights, finalize, run_kernel
from napari_mutex_watershed.sweep.scoring import score
from napari_mutex_watershed.synthetic import affinities_from_labels, sample_volume

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pinky40_gt_half.npz"
OFFSETS = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (3, 0, 0), (0, 9, 0), (0, 0, 9)]
MIN_SIZES = (0, 2, 5, 10, 20, 50, 100, 200, 500)
BIASES = ((0.5, 0.7), (0.4, 0.6))  # the defaults, and the README's sample run


def inputs(size: int):
    """(name, affinities, ground truth, offsets) for the sample and two shared-data crops."""
    affs, truth, offsets = sample_volume()
    yield "sample 64x128x128", affs, truth, offsets
    if not DATA.exists():
        print(f"(shared data absent: {DATA}; only the sample)")
        return
    labels = np.load(DATA)["labels"]
    # two crops far apart; the first corner of the cutout is nearly empty
    for name, corner in (("pinky A", (0, 256, 256)), ("pinky B", (256 - size, 0, 512 - size))):
        box = tuple(slice(c, c + size) for c in corner)
        truth = np.ascontiguousarray(labels[box])
        affs = affinities_from_labels(truth, OFFSETS, sigma=1.0, noise=0.1, seed=1)
        yield f"{name} {size}^3 at {corner}", affs, truth, OFFSETS


def rows(affs, truth, offsets, bias_short, bias_long):
    parameters = WatershedParameters(offsets=offsets, bias_short=bias_short, bias_long=bias_long)
    weights, _ = edge_weights(affs, parameters)
    raw = run_kernel(weights, parameters)
    del weights
    n_objects = int(np.count_nonzero(np.unique(truth)))
    labelled = truth > 0
    for min_size in MIN_SIZES:
        labels = finalize(raw, min_size)
        sizes = np.bincount(labels.ravel())[1:]
        sizes = sizes[sizes > 0]
        lost = np.count_nonzero(labelled & (labels == 0)) / np.count_nonzero(labelled)
        scores = score(labels, truth)
        kept = labels > 0  # grouping alone: the voxels the result labels
        grouping = score(labels[kept], truth[kept])
        yield (f"| {min_size} | {len(sizes) / n_objects:.1f} | {int((sizes == 1).sum())} | "
               f"{100 * lost:.2f} % | {scores.adapted_rand_error:.4f} | "
               f"{grouping.adapted_rand_error:.4f} | "
               f"{scores.voi_split:.3f} | {scores.voi_merge:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128, help="edge of the shared-data crops")
    args = parser.parse_args()
    for name, affs, truth, offsets in inputs(args.size):
        for bias_short, bias_long in BIASES:
            print(f"\n### {name}, biases {bias_short} / {bias_long}\n")
            print("| min_size | segments per object | single voxels | labelled voxels lost "
                  "| ARAND | ARAND labelled | VOI split | VOI merge |")
            print("|---:|---:|---:|---:|---:|---:|---:|---:|")
            for row in rows(affs, truth, offsets, bias_short, bias_long):
                print(row, flush=True)


if __name__ == "__main__":
    main()
