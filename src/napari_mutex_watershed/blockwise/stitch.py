"""Step 2 of a blockwise run: one mutex watershed over the graph of face fragments.

Only fragments that touch a block face are nodes, so the graph grows with the area of the
block faces, not with the volume. The result is a lookup table from every fragment to its
final consecutive id, where the size and affinity filters are applied to whole segments.
"""

from __future__ import annotations

import os

import mwatershed
import numpy as np

from ..engine.labels import segment_keep_mask, smallest_label_dtype
from ..errors import KernelError
from .fragments import aggregate_edges
from .plan import BlockwisePlan


class IncompleteRunError(RuntimeError):
    """A block has no record: step 1 did not finish."""


def load_records(plan: BlockwisePlan):
    sizes, nn_sums, us, vs, ws, kernel_seconds = [], [], [], [], [], 0.0
    for index in range(plan.num_blocks):
        path = plan.block_record(index)
        if not path.exists():
            raise IncompleteRunError(f"block {np.unravel_index(index, plan.grid_shape)} has no fragments")
        with np.load(path) as record:
            sizes.append(record["sizes"])
            nn_sums.append(record["nn_sums"])
            us.append(record["u"])
            vs.append(record["v"])
            ws.append(record["w"])
            kernel_seconds += float(record["kernel_seconds"])
    return sizes, nn_sums, np.concatenate(us), np.concatenate(vs), np.concatenate(ws), kernel_seconds


def cluster_fragments(u, v, w) -> tuple[np.ndarray, np.ndarray]:
    """(node, root) pairs of a mutex watershed over weighted fragment edges."""
    if len(u) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    u, v, w = aggregate_edges(u, v, w)
    strong = w != 0
    u, v, w = u[strong], v[strong], w[strong]
    order = np.argsort(-np.abs(w), kind="stable")
    edges = list(zip((w[order] > 0).tolist(), u[order].tolist(), v[order].tolist()))
    try:
        pairs = mwatershed.cluster(edges)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:
        raise KernelError(f"mwatershed failed on the fragment graph: {error}") from None
    pairs = np.array(pairs, dtype=np.uint64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def build_lookup(plan: BlockwisePlan) -> dict:
    """Compute and save the fragment -> final id table; return a summary."""
    sizes, nn_sums, u, v, w, kernel_seconds = load_records(plan)
    counts = np.array([len(s) - 1 for s in sizes], np.int64)  # fragments per block
    base = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    total = int(counts.sum())

    def position(ids):
        """Fragment id (block * block_voxels + local) -> index in 1..total."""
        ids = ids.astype(np.int64)
        block, local = np.divmod(ids, plan.block_voxels)
        return base[block] + local

    nodes, roots = cluster_fragments(u, v, w)
    representative = np.arange(total + 1, dtype=np.int64)
    if len(nodes):
        node_pos, root_pos = position(nodes), position(roots)
        smallest = np.full(total + 1, np.iinfo(np.int64).max)
        np.minimum.at(smallest, root_pos, node_pos)
        representative[node_pos] = smallest[root_pos]

    all_sizes = np.concatenate([[0]] + [s[1:] for s in sizes]).astype(np.int64)
    segment_sizes = np.bincount(representative, weights=all_sizes, minlength=total + 1)
    segment_nn = None
    if plan.parameters.threshold > 0:
        all_nn = np.concatenate([[0.0]] + [s[1:] for s in nn_sums])
        segment_nn = np.bincount(representative, weights=all_nn, minlength=total + 1)
    keep = segment_keep_mask(segment_sizes, plan.parameters.min_size, plan.parameters.threshold, segment_nn)
    keep &= representative == np.arange(total + 1)
    keep[0] = False
    final = np.cumsum(keep, dtype=np.int64)
    n_segments = int(final[-1]) if final.size else 0
    final = np.where(keep, final, 0)
    lookup = final[representative].astype(smallest_label_dtype(n_segments))

    for path, table in [(plan.bases_path, base), (plan.lookup_path, lookup)]:
        partial = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(partial, table)
        os.replace(partial, path)
    return {"fragments": total, "graph_edges": int(len(u)), "segments": n_segments,
            "kernel_seconds": round(kernel_seconds, 3)}
