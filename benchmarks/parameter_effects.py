"""What each WatershedParameters field does to the result, measured on the sample data.

    python benchmarks/parameter_effects.py                   # 48 x 96 x 96, a minute or two
    python benchmarks/parameter_effects.py --shape 64 128 128

Prints Markdown tables (the numbers in docs/parameters.md): per setting the number of
segments (all, and with at least 50 voxels), the fraction of ground-truth cell voxels that get
a label, adapted Rand error (ARE) and variation of information (split, merge) against the
sample's ground truth (its label 0, the membranes, ignored), ARE over labelled voxels only,
and the time of one segment() call.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date

import numpy as np
from skimage.metrics import adapted_rand_error, variation_of_information

from napari_mutex_watershed import WatershedParameters, segment
from napari_mutex_watershed.synthetic import sample_volume

COLUMNS = ("| setting | segments | >= 50 vx | cells labelled | ARE | ARE labelled | VOI split "
           "| VOI merge | s |")
RULE = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"


def evaluate(affinities, truth, parameters: WatershedParameters, **kwargs) -> str:
    started = time.perf_counter()
    labels = segment(affinities, parameters, **kwargs)
    seconds = time.perf_counter() - started
    sizes = np.bincount(labels.ravel())[1:]
    sizes = sizes[sizes > 0]
    # skimage ignores label 0 of the ground truth only: background in the result counts as one
    # big segment (a merge). "ARE labelled" scores only the voxels the result labels.
    arand = adapted_rand_error(truth, labels, ignore_labels=(0,))[0]
    labelled = labels > 0
    arand_labelled = adapted_rand_error(truth[labelled], labels[labelled], ignore_labels=(0,))[0]
    cells = truth > 0
    coverage = (labelled & cells).sum() / cells.sum()
    split, merge = variation_of_information(truth, labels, ignore_labels=(0,))
    return (f"{len(sizes)} | {int((sizes >= 50).sum())} | {coverage:.3f} | "
            f"{arand:.3f} | {arand_labelled:.3f} | {split:.2f} | {merge:.2f} | {seconds:.2f} |")


def table(title: str, affinities, truth, settings) -> None:
    print(f"\n### {title}\n")
    print(COLUMNS)
    print(RULE)
    for name, parameters, kwargs in settings:
        print(f"| {name} | {evaluate(affinities, truth, parameters, **kwargs)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[48, 96, 96])
    args = parser.parse_args()
    shape = tuple(args.shape)
    affinities, truth, offsets = sample_volume(shape)
    noisy, noisy_truth, _ = sample_volume(shape, noise=0.3)
    # min_size 0, not the default: every table shows the fragments each setting makes
    base = WatershedParameters(offsets=offsets, min_size=0)

    def with_(**update):
        return WatershedParameters(**{**base.model_dump(), **update})

    print(f"Measured {date.today().isoformat()} on {platform.node()}, {os.cpu_count()} cores: "
          f"sample_volume({shape}), {int(truth.max())} cells, offsets {offsets}, noise 0.1 "
          "unless stated; defaults otherwise (bias_short 0.5, bias_long 0.7) but min_size 0.")

    table("bias_short (bias_long 0.7)", affinities, truth,
          [(f"bias_short {b}", with_(bias_short=b), {}) for b in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)])
    table("bias_long (bias_short 0.5)", affinities, truth,
          [(f"bias_long {b}", with_(bias_long=b), {}) for b in (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)])
    table("one bias for all offsets (DaCapo's candidates)", affinities, truth,
          [(f"bias {b}", with_(bias=b), {}) for b in (0.1, 0.25, 0.5, 0.75, 0.9)])
    table("min_size", affinities, truth,
          [(f"min_size {m}", with_(min_size=m), {}) for m in (0, 10, 50, 200)])
    table("threshold", affinities, truth,
          [(f"threshold {t}", with_(threshold=t), {}) for t in (0.0, 0.3, 0.5, 0.7)])
    table("sigma, noise 0.1", affinities, truth,
          [(f"sigma {s}", with_(sigma=s), {}) for s in (0, 0.5, 1, 2)])
    table("sigma, noise 0.3", noisy, noisy_truth,
          [(f"sigma {s}", with_(sigma=s), {}) for s in (0, 0.5, 1, 2)])
    table("strides", affinities, truth, [
        ("none", base, {}),
        ("strides [1, 3, 3]", with_(strides=[1, 3, 3]), {}),
        ("strides [1, 3, 3], randomized, seed 0", with_(strides=[1, 3, 3],
                                                        randomized_strides=True), {}),
        ("strides [1, 3, 3], randomized, seed 1", with_(strides=[1, 3, 3],
                                                        randomized_strides=True, seed=1), {}),
    ])
    as_uint8 = np.round(affinities * 255).astype(np.uint8)
    table("input dtype and invert", affinities, truth, [("float32", base, {})])
    print(f"| uint8 | {evaluate(as_uint8, truth, base)}")
    print(f"| 1 - affinities, invert | {evaluate(1 - affinities, truth, with_(invert=True))}")


if __name__ == "__main__":
    main()
