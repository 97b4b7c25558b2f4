"""Step 3 of a blockwise run: join agreed fragment pairs and number the segments.

The graph has one edge per stitched pair, so it grows with the area of the block faces, not
with the volume. The result is a lookup table from every fragment to its final consecutive id,
where the size and affinity filters are applied to whole segments.
"""

from __future__ import annotations

import os

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..engine.labels import segment_keep_mask, smallest_label_dtype
from .plan import BlockwisePlan


class IncompleteRunError(RuntimeError):
    """A block has no record: step 1 did not finish."""


def load_records(plan: BlockwisePlan):
    sizes, nn_sums, us, vs, kernel_seconds = [], [], [], [], 0.0
    for index in range(plan.num_blocks):
        path = plan.block_record(index)
        if not path.exists():
            position = tuple(int(p) for p in np.unravel_index(index, plan.grid_shape))
            raise IncompleteRunError(f"block {position} has no fragments")
        with np.load(path) as record:
            sizes.append(record["sizes"])
            nn_sums.append(record["nn_sums"])
            kernel_seconds += float(record["kernel_seconds"])
        u, v = np.load(plan.match_record(index))
        us.append(u)
        vs.append(v)
    return sizes, nn_sums, np.concatenate(us), np.concatenate(vs), kernel_seconds


def agreed_pairs(u, v):
    """Pairs that both blocks of a face found: each block reports a pair from its own halo."""
    if not len(u):
        return u, v
    pairs, counts = np.unique(np.stack([np.minimum(u, v), np.maximum(u, v)]), axis=1,
                              return_counts=True)
    return pairs[0][counts >= 2], pairs[1][counts >= 2]


def build_lookup(plan: BlockwisePlan) -> dict:
    """Compute and save the fragment -> final id table; return a summary."""
    sizes, nn_sums, u, v, kernel_seconds = load_records(plan)
    u, v = agreed_pairs(u, v)
    counts = np.array([len(s) - 1 for s in sizes], np.int64)  # fragments per block
    base = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    total = int(counts.sum())

    def position(ids):
        """Fragment id (block * block_voxels + local) -> index in 1..total."""
        block, local = np.divmod(ids.astype(np.int64), plan.block_voxels)
        return base[block] + local

    graph = coo_matrix(
        (np.ones(len(u), np.int8), (position(u), position(v))), shape=(total + 1, total + 1)
    )
    _, component = connected_components(graph, directed=False)
    # a segment is named by its first fragment, so numbering follows block order
    first = np.full(component.max() + 1, total + 1, np.int64)
    np.minimum.at(first, component, np.arange(total + 1))
    representative = first[component]

    all_sizes = np.concatenate([[0]] + [s[1:] for s in sizes]).astype(np.int64)
    segment_sizes = np.bincount(representative, weights=all_sizes, minlength=total + 1)
    segment_nn = None
    if plan.parameters.threshold > 0:
        all_nn = np.concatenate([[0.0]] + [s[1:] for s in nn_sums])
        segment_nn = np.bincount(representative, weights=all_nn, minlength=total + 1)
    keep = segment_keep_mask(
        segment_sizes, plan.parameters.min_size, plan.parameters.threshold, segment_nn
    )
    keep &= representative == np.arange(total + 1)
    keep[0] = False
    final = np.cumsum(keep, dtype=np.int64)
    n_segments = int(final[-1])
    lookup = np.where(keep, final, 0)[representative].astype(smallest_label_dtype(n_segments))

    for path, table in [(plan.bases_path, base), (plan.lookup_path, lookup)]:
        partial = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(partial, table)
        os.replace(partial, path)
    return {"fragments": total, "stitched_pairs": int(len(u)), "segments": n_segments,
            "kernel_seconds": round(kernel_seconds, 3)}
