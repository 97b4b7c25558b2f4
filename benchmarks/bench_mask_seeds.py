"""A mask and seeds in blockwise runs against the whole-volume engine with the same mask and
seeds, on real neuron labels (docs/blockwise.md, *Mask and seeds*).

    python benchmarks/bench_mask_seeds.py                  # 128 x 256 x 256, 64^3 blocks
    python benchmarks/bench_mask_seeds.py --depth 256 --block 128 --noise-seed 2

The crop is [0:depth, 256:512, 256:512] of the shared labels (../shared/data/
pinky40_gt_half.npz, skipped when absent), with bench_blockwise's affinities (six offsets,
blur 1, noise 0.1, uint8) and biases 0.5 / 0.7. The mask is an ellipsoid centred in the
crop with radii 1.2 times its half-sizes, so its corners fall outside (a tissue border
through several blocks); the
seeds are ``--per-object`` random voxels of each of the ``--objects`` largest objects inside
the mask, one seed id per object, so most seed ids lie in several blocks.

Per run (none, mask, seeds, both): ARAND and VOI (split + merge) against the labels inside
the mask, for the whole-volume ``segment()`` and for the blockwise run (2 workers), and the
difference; ARAND between the two; voxels outside the mask that got a label; seed ids whose
voxels all carry their id, and seed ids of the blockwise run that share an object with
another seed id; how much of each seeded object its seed id covers (mean), both runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

sys.path.insert(0, str(Path(__file__).parent))
from bench_blockwise import DATA, crop_labels, scores, write_crop

FIRST_SEED = 1000


def make_mask(shape) -> np.ndarray:
    centre = [(s - 1) / 2 for s in shape]
    radii = [1.2 * s / 2 for s in shape]
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1
    return inside.astype(np.uint8)


def make_seeds(truth, mask, objects: int, per_object: int, rng) -> tuple[np.ndarray, dict]:
    """Seeds on the largest objects inside the mask; {seed id: object id}."""
    inside = truth * (mask > 0)
    ids, counts = np.unique(inside[inside > 0], return_counts=True)
    chosen = ids[np.argsort(-counts)[:objects]]
    seeds = np.zeros(truth.shape, np.uint32)
    owners = {}
    for k, object_id in enumerate(chosen):
        voxels = np.argwhere(inside == object_id)
        picked = voxels[rng.choice(len(voxels), min(per_object, len(voxels)), replace=False)]
        seeds[tuple(picked.T)] = FIRST_SEED + k
        owners[FIRST_SEED + k] = int(object_id)
    return seeds, owners


def seed_checks(labels, seeds, truth, owners) -> tuple[int, int, float]:
    """(seed ids whose voxels all carry their id, seed ids sharing an object with another,
    mean share of each seeded object that its seed id covers)."""
    kept = sum(bool(np.all(labels[seeds == s] == s)) for s in owners)
    holders = {s: set(np.unique(labels[seeds == s]).tolist()) for s in owners}
    shared = sum(any(holders[s] & holders[t] for t in owners if t != s) for s in owners)
    cover = np.mean([np.count_nonzero((labels == s) & (truth == o)) / np.count_nonzero(truth == o)
                     for s, o in owners.items()])
    return kept, shared, float(cover)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=128)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--objects", type=int, default=30)
    parser.add_argument("--per-object", type=int, default=3)
    parser.add_argument("--noise-seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if not DATA.exists():
        print(f"skipped: {DATA} is absent")
        return
    from napari_mutex_watershed import segment
    from napari_mutex_watershed.blockwise.launch import segment_blockwise_zarr
    from napari_mutex_watershed.storage import write_labels

    work = Path(tempfile.mkdtemp(prefix="bench_mask_seeds_"))
    try:
        truth = crop_labels("256,256", 256)[: args.depth]
        path, parameters = write_crop(work, "crop", truth, args.noise_seed)
        affinities = zarr.open_array(str(path))[:]
        mask = make_mask(truth.shape)
        seeds, owners = make_seeds(truth, mask, args.objects, args.per_object,
                                   np.random.default_rng(args.noise_seed))
        write_labels(work / "guides.zarr/mask", mask)
        write_labels(work / "guides.zarr/seeds", seeds)
        print(f"crop {truth.shape}, {len(np.unique(truth)) - 1} objects, mask keeps "
              f"{mask.mean():.0%}, {len(owners)} seed ids of {args.per_object} voxels, "
              f"blocks {args.block}^3, noise seed {args.noise_seed}")
        print("\n| run | whole ARAND / VOI | blockwise ARAND / VOI | diff ARAND / VOI | "
              "ARAND blockwise vs whole | labelled outside the mask | seed ids kept whole / "
              "blockwise | seed ids sharing an object | seeded object covered whole / "
              "blockwise | whole s / blockwise s (load) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        from skimage.metrics import adapted_rand_error

        for name, use_mask, use_seeds in (("none", False, False), ("mask", True, False),
                                          ("seeds", False, True), ("mask and seeds", True, True)):
            started = time.perf_counter()
            whole = segment(affinities, parameters, mask=mask.astype(bool) if use_mask else None,
                            seeds=seeds if use_seeds else None)
            whole_seconds = time.perf_counter() - started
            started = time.perf_counter()
            out = segment_blockwise_zarr(
                path, work / f"{name.replace(' ', '_')}.zarr/labels", parameters,
                block_size=(args.block,) * 3, num_workers=2, progress="none",
                mask_path=work / "guides.zarr/mask" if use_mask else None,
                seeds_path=work / "guides.zarr/seeds" if use_seeds else None)
            blockwise_seconds = time.perf_counter() - started
            blockwise = zarr.open_array(str(out))[:]
            scored = truth * (mask > 0) if use_mask else truth
            a_w, v_w = scores(scored, whole)
            a_b, v_b = scores(scored, blockwise)
            outside = int(np.count_nonzero(blockwise[mask == 0])) if use_mask else "-"
            if use_seeds:
                kw, _, cw = seed_checks(whole, seeds, truth, owners)
                kb, shared, cb = seed_checks(blockwise, seeds, truth, owners)
                seed_text = f"{kw} / {kb} of {len(owners)} | {shared} | {cw:.3f} / {cb:.3f}"
            else:
                seed_text = "- | - | -"
            between = adapted_rand_error(whole, blockwise)[0]
            print(f"| {name} | {a_w:.4f} / {v_w:.3f} | {a_b:.4f} / {v_b:.3f} | "
                  f"{a_b - a_w:+.4f} / {v_b - v_w:+.3f} | {between:.4f} | {outside} | "
                  f"{seed_text} | {whole_seconds:.1f} / {blockwise_seconds:.1f} "
                  f"({os.getloadavg()[0]:.1f}) |", flush=True)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
