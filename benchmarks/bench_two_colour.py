"""A candidate blockwise design, measured in one process against one whole-volume call.

    python benchmarks/bench_two_colour.py                          # noise seed 1, 64^3 and 128^3
    python benchmarks/bench_two_colour.py --noise-seed 2 3 --blocks 64

Not the shipped design (docs/blockwise.md, "Two colours with relabelled bands"): it removes
the seams the shipped stitch step leaves, but is not yet robust across biases, and this
script is how it is measured. Blocks are coloured by the parity of the sum of their grid
position, so every face neighbour of a block has the other colour.

- Even blocks are segmented alone with the default context, as in the shipped pipeline.
- Odd blocks run after their even neighbours, with a wider halo (CONTEXT_ODD). In that halo
  the even neighbours' labels are seeds: edges inside one label are made certain attractive
  and edges between two labels of one block certain repulsive. The odd block joins every seed
  label that one of its segments takes in.
- Near a face an even block saw least of what lies beyond it, so the odd block across that
  face relabels a band of BAND voxels on the even side (voxels within the band of two faces
  stay with the even block: two odd blocks never see each other's labels) and takes no seeds
  there.
- Joins that connect two fragments a block kept apart (touching at least 8 voxels from its
  faces for even blocks, 2 for odd blocks, whose halo held the neighbours' decisions) are cut
  by a minimum cut weighted by the overlap of each join, as in the shipped stitch step.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from bench_blockwise import DATA, OFFSETS, load_crop, scores, seam_splits

CONTEXT_ODD = (6, 16, 16)
BAND = (3, 7, 7)
MARGIN_EVEN, MARGIN_ODD = 8, 2
CERTAIN = 1e3


def relabelling_block(shape, block, grid, band) -> np.ndarray:
    """Per voxel of an even block: the flat index of the odd block that relabels it, or -1.

    A voxel goes to the face it is nearest to (distance over band width); voxels within the
    band of two faces keep their even label."""
    owner = np.full(shape, -1, np.int64)
    nearest = np.full(shape, np.inf)
    near_faces = np.zeros(shape, np.int8)
    index = np.indices(shape, sparse=True)
    position = [i // b for i, b in zip(index, block)]
    for axis, width in enumerate(band):
        within = index[axis] % block[axis]
        for step in (-1, 1):
            distance = (within if step < 0 else block[axis] - 1 - within) + 0.5
            neighbour = list(position)
            neighbour[axis] = position[axis] + step
            exists = (neighbour[axis] >= 0) & (neighbour[axis] < grid[axis])
            norm = np.broadcast_to(distance / width, shape)
            flat = np.broadcast_to(np.ravel_multi_index(
                [np.clip(np.broadcast_to(q, shape), 0, g - 1) for q, g in zip(neighbour, grid)],
                grid), shape)
            inside = np.broadcast_to(exists, shape) & (norm < 1)
            near_faces += inside
            take = inside & (norm < nearest)
            nearest[take] = norm[take]
            owner[take] = flat[take]
    odd = sum(np.broadcast_to(p, shape) for p in position) % 2 == 1
    owner[odd | (near_faces >= 2)] = -1
    return owner


def seeded(weights, seeds, offsets, source) -> None:
    """Seeds through the weights, not the kernel's seeds: there every two seed ids are mutex
    (and the cost grows with their square), but labels of two blocks may be one object."""
    from napari_mutex_watershed.engine.weights import edge_slices

    for channel, offset in enumerate(offsets):
        s, t = edge_slices(offset, seeds.shape)
        a, b = seeds[s], seeds[t]
        both = (a > 0) & (b > 0)
        w = weights[channel][s]
        w[both & (a == b)] = CERTAIN
        w[both & (a != b) & (source[s] == source[t])] = -CERTAIN


def two_colour(affinities, parameters, block) -> tuple[np.ndarray, float]:
    """(labels, kernel seconds summed over blocks)."""
    from napari_mutex_watershed.blockwise import fragments
    from napari_mutex_watershed.blockwise.stitch import components, cut_separations
    from napari_mutex_watershed.engine import edge_weights, run_kernel

    shape = affinities.shape[1:]
    grid = [-(-s // b) for s, b in zip(shape, block)]
    block_voxels = int(np.prod(block))
    even_tag = np.uint64(1 << 62)  # even ids: block * block_voxels + local, tagged
    even = np.zeros(shape, np.uint64)
    final = np.zeros(shape, np.uint64)
    owner = relabelling_block(shape, block, grid, BAND)
    joins, overlaps, separations = [], [], []
    next_id = 1
    kernel_seconds = 0.0
    for colour in (0, 1):
        for position in itertools.product(*[range(g) for g in grid]):
            if sum(position) % 2 != colour:
                continue
            context = parameters.context_voxels() if colour == 0 else CONTEXT_ODD
            lo = [p * b for p, b in zip(position, block)]
            hi = [min(a + b, s) for a, b, s in zip(lo, block, shape)]
            read_lo = [max(a - c, 0) for a, c in zip(lo, context)]
            read_hi = [min(a + c, s) for a, c, s in zip(hi, context, shape)]
            read = tuple(slice(a, b) for a, b in zip(read_lo, read_hi))
            core = tuple(slice(a - r, b - r) for a, b, r in zip(lo, hi, read_lo))
            inner = [(p > 0, p < g - 1) for p, g in zip(position, grid)]
            index = int(np.ravel_multi_index(position, grid))
            weights, _ = edge_weights(affinities[(slice(None),) + read], parameters)
            if colour == 1:
                mine = owner[read] == index
                seeds = np.where(owner[read] == -1, even[read], 0)
                seeded(weights, seeds, parameters.offsets, seeds // np.uint64(block_voxels))
            started = time.perf_counter()
            raw = run_kernel(np.ascontiguousarray(weights), parameters)
            kernel_seconds += time.perf_counter() - started
            ids, local = np.unique(raw[core], return_inverse=True)
            local = local.reshape(raw[core].shape).astype(np.uint32) + 1
            if colour == 0:
                new = (np.uint64(index * block_voxels) + np.arange(1, len(ids) + 1, dtype=np.uint64)) | even_tag
                new[ids == 0] = 0
                even[tuple(slice(a, b) for a, b in zip(lo, hi))] = new[local - 1] & ~even_tag
                margin = MARGIN_EVEN
            else:
                write = np.zeros(raw.shape, bool)
                write[core] = True
                write |= mine
                written, inverse = np.unique(raw[write], return_inverse=True)
                new = np.arange(next_id, next_id + len(written), dtype=np.uint64)
                next_id += len(written)
                new[written == 0] = 0
                out = final[read]
                out[write] = new[inverse.ravel()]
                final[read] = out
                # seeds a segment takes in: joins weighted by the overlap
                taken = (seeds > 0) & (raw > 0)
                pairs, counts = np.unique(np.stack([raw[taken], seeds[taken]]), axis=1, return_counts=True)
                where = np.minimum(np.searchsorted(written, pairs[0]), len(written) - 1)
                is_written = written[where] == pairs[0]
                joins += [(int(new[w]), int(s | even_tag)) for w, s in zip(where[is_written], pairs[1][is_written])]
                overlaps += counts[is_written].tolist()
                # a segment only in the halo still joins the seeds it takes in
                halo_only = {}
                for r, s, c in zip(pairs[0][~is_written], pairs[1][~is_written], counts[~is_written]):
                    halo_only.setdefault(int(r), []).append((int(s | even_tag), int(c)))
                for taken_seeds in halo_only.values():
                    for s, c in taken_seeds[1:]:
                        joins.append((taken_seeds[0][0], s))
                        overlaps.append(min(c, taken_seeds[0][1]))
                new = new[np.searchsorted(written, ids)]
                margin = MARGIN_ODD
            saved, fragments.SEPARATION_MARGIN = fragments.SEPARATION_MARGIN, margin
            try:
                apart = fragments.separated_pairs(local, inner)
            finally:
                fragments.SEPARATION_MARGIN = saved
            apart = apart[:, (new[apart[0] - 1] > 0) & (new[apart[1] - 1] > 0)]
            separations += list(zip(new[apart[0] - 1].tolist(), new[apart[1] - 1].tolist()))
    kept_even = (final == 0) & (even > 0)
    final[kept_even] = even[kept_even] | even_tag
    nodes, inverse = np.unique(final, return_inverse=True)

    def node(ids):
        ids = np.asarray(ids, np.uint64).reshape(-1)
        at = np.minimum(np.searchsorted(nodes, ids), len(nodes) - 1)
        return at, nodes[at] == ids

    join_pairs = np.array(joins, np.uint64).reshape(-1, 2)
    u, u_ok = node(join_pairs[:, 0])
    v, v_ok = node(join_pairs[:, 1])
    live = u_ok & v_ok  # a seed label the odd blocks relabelled entirely is gone
    u, v, overlap = u[live], v[live], np.asarray(overlaps, float)[live]
    apart = np.array(separations, np.uint64).reshape(-1, 2)
    a, a_ok = node(apart[:, 0])
    b, b_ok = node(apart[:, 1])
    keep = cut_separations(len(nodes), u, v, overlap, a[a_ok & b_ok], b[a_ok & b_ok])
    component = components(len(nodes), u[keep], v[keep]) + 1
    component[nodes == 0] = 0
    return component[inverse.ravel()].reshape(shape), kernel_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--noise-seed", type=int, nargs="+", default=[1])
    parser.add_argument("--blocks", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--bias-short", type=float, default=0.5)
    parser.add_argument("--bias-long", type=float, default=0.7)
    args = parser.parse_args()
    if not DATA.exists():
        print(f"skipped: {DATA} is absent")
        return
    from napari_mutex_watershed import WatershedParameters, segment
    from napari_mutex_watershed.synthetic import affinities_from_labels

    parameters = WatershedParameters(offsets=OFFSETS, bias_short=args.bias_short, bias_long=args.bias_long)
    truth = load_crop(256)
    print(f"256^3 crop, biases {args.bias_short}/{args.bias_long}, context even "
          f"{parameters.context_voxels()} odd {CONTEXT_ODD}, band {BAND}; differences are "
          "candidate minus whole volume\n")
    print("| noise seed | blocks | whole s | kernel s (sum) | ARAND | ARAND diff | VOI diff (split, merge) | seams (whole's; added) | share of face contact split (whole) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for seed in args.noise_seed:
        affinities = affinities_from_labels(truth, OFFSETS, sigma=1.0, noise=0.1, seed=seed)
        started = time.perf_counter()
        whole = segment(affinities, parameters)
        whole_seconds = time.perf_counter() - started
        w_arand, w_split, w_merge = scores(truth, whole)
        for size in args.blocks:
            labels, kernel_seconds = two_colour(affinities, parameters, (size,) * 3)
            arand, split, merge = scores(truth, labels)
            seams, crossing, contact = seam_splits(truth, labels, (size,) * 3)
            whole_seams, _, whole_contact = seam_splits(truth, whole, (size,) * 3)
            print(f"| {seed} | {size}^3 | {whole_seconds:.0f} | {kernel_seconds:.0f} | {arand:.4f} | "
                  f"{arand - w_arand:+.3f} | {split + merge - w_split - w_merge:+.3f} "
                  f"({split - w_split:+.3f}, {merge - w_merge:+.3f}) | {len(seams)}/{crossing} "
                  f"({len(whole_seams)}; {len(seams - whole_seams)}) | {contact:.2%} ({whole_contact:.2%}) |",
                  flush=True)


if __name__ == "__main__":
    main()
