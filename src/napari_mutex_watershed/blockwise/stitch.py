"""Step 3 of a blockwise run: join matched fragment pairs and number the segments.

Pairs that both blocks of a face agree on are joined. Pairs where one fragment contains the
other, seen from both blocks, are joined next, largest overlap first, unless they would join
two fragments that touch inside one block and were kept apart there (a mutex watershed over
the contained pairs). Fragments that a block kept apart deep inside it must not end in one
segment: where the joins connect them, the joins with the least overlap between them are cut.
The graph has one edge per pair, so it grows with the area of the block faces, not with the
volume. The result is a lookup table from every fragment to its final consecutive id, where
the size and affinity filters are applied to whole segments.
"""

from __future__ import annotations

import os
from pathlib import Path

import mwatershed
import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components, maximum_flow

from ..engine.labels import segment_keep_mask, smallest_label_dtype
from ..errors import MutexWatershedError
from .matching import CONTAINED, MAJORITY
from .plan import BlockwisePlan

#: Ids the output array holds: ``plan_run`` creates it as uint32.
MAX_SEGMENTS = int(np.iinfo(np.uint32).max)


class IncompleteRunError(RuntimeError):
    """A block has no record: step 1 did not finish."""


def load_records(plan: BlockwisePlan):
    """Fragments per block; all matched pairs (u, v, overlap, kind) and all separated pairs
    (a, b), as fragment ids; the summed kernel time. Sizes stay on disk: see ``block_sizes``."""
    counts, matches, separated, kernel_seconds = [], [], [], 0.0
    for index in range(plan.num_blocks):
        path = plan.block_record(index)
        if not path.exists():
            position = tuple(int(p) for p in np.unravel_index(index, plan.grid_shape))
            raise IncompleteRunError(f"block {position} has no fragments")
        with np.load(path) as record:
            counts.append(len(record["sizes"]) - 1)
            base = np.uint64(index) * np.uint64(plan.block_voxels)
            separated.append(record["separated"].astype(np.uint64) + base)
            kernel_seconds += float(record["kernel_seconds"])
        matches.append(np.load(plan.match_record(index)))
    return (np.array(counts, np.int64), np.concatenate(matches, axis=1),
            np.concatenate(separated, axis=1), kernel_seconds)


def block_sizes(plan: BlockwisePlan):
    """(index, sizes, affinity sums or None) of every block in order, read one at a time."""
    wants_nn = plan.parameters.threshold > 0
    for index in range(plan.num_blocks):
        with np.load(plan.block_record(index)) as record:
            yield index, record["sizes"], record["nn_sums"] if wants_nn else None


def load_adjacent(plan: BlockwisePlan, node_of, wanted):
    """The adjacent pairs (a, b) of every block, as graph nodes, between fragments that are
    nodes and for which ``wanted(a, b)`` holds: read block by block, because on data with many
    small fragments all of them together would take more memory than the rest of the stitch."""
    found = [np.zeros((2, 0), np.int64)]
    for index in range(plan.num_blocks):
        with np.load(plan.block_record(index)) as record:
            pairs = record["adjacent"].astype(np.uint64)
        pairs = node_of(pairs + np.uint64(index) * np.uint64(plan.block_voxels))
        pairs = pairs[:, (pairs >= 0).all(axis=0)]
        found.append(pairs[:, wanted(*pairs)])
    return np.concatenate(found, axis=1)


def agreed_pairs(u, v, overlap, kind):
    """The MAJORITY pairs and the other CONTAINED pairs that both blocks of a face found (each
    block reports a pair from its own halo), with the overlap of both reports summed: two
    (u, v, overlap) triples."""
    if not len(u):
        return (u, v, overlap.astype(np.float64)), (u, v, overlap.astype(np.float64))
    pairs, inverse = np.unique(
        np.stack([np.minimum(u, v), np.maximum(u, v)]), axis=1, return_inverse=True
    )
    inverse = inverse.ravel()
    summed = np.bincount(inverse, weights=overlap.astype(np.float64))
    majority = np.bincount(inverse, weights=(kind & MAJORITY) > 0) >= 2
    contained = (np.bincount(inverse, weights=(kind & CONTAINED) > 0) >= 2) & ~majority
    return tuple((pairs[0][m], pairs[1][m], summed[m]) for m in (majority, contained))


def join_contained(segment, contained_u, contained_v, overlap, load_adjacent):
    """Which contained pairs to join on top of the joins that made ``segment`` (the segment of
    every fragment): largest overlap first, each one unless a block kept two fragments of the
    segments it would join apart although they are adjacent (a mutex watershed over segments).
    ``load_adjacent(wanted)`` returns the adjacent pairs (2, n) for which ``wanted(a, b)``
    holds, so only those between segments that contained pairs could join are ever loaded.

    A fragment that a block split off, or a branch that meets its neuron beyond the face, is
    contained in one fragment across the face without being its largest overlap there. A
    fragment that merged two objects near a face contains pieces of both; the two pieces
    are then adjacent in their own block, which kept them apart.
    """
    contained_u, contained_v = segment[contained_u], segment[contained_v]
    involved = np.zeros(len(segment), bool)
    involved[contained_u] = involved[contained_v] = True
    a, b = segment[load_adjacent(lambda x, y: involved[segment[x]] & involved[segment[y]])]
    apart = a != b
    order = np.argsort(-overlap, kind="stable")
    edges = [(False, int(x), int(y)) for x, y in zip(a[apart], b[apart])]
    edges += [(True, int(contained_u[i]), int(contained_v[i]))
              for i in order if contained_u[i] != contained_v[i]]
    clusters = dict(mwatershed.cluster(edges))
    ends = [np.array([clusters.get(int(x), int(x)) for x in side])
            for side in (contained_u, contained_v)]
    return ends[0] == ends[1]


def components(n: int, u, v) -> np.ndarray:
    graph = coo_matrix((np.ones(len(u), np.int8), (u, v)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def cut_separations(n: int, u, v, overlap, a, b) -> np.ndarray:
    """Which joins (u, v) to keep so that no separated pair (a, b) ends in one segment.

    A fragment that merged two objects near a block face gets joined to the continuations of
    both; where a block saw the two apart deep inside it, a minimum cut (capacity: overlap)
    removes the weakest joins between them, so one wrong merge near a face does not join two
    whole neurons. Only components that hold a separated pair are touched.
    """
    keep = np.ones(len(u), bool)
    component = components(n, u, v)
    violated = component[a] == component[b]
    if not violated.any():
        return keep
    a, b = a[violated], b[violated]
    # nodes, joins and separations grouped by component with one sort each, so the work
    # grows with the components that hold a separation, not with their count times the graph
    grouped = []
    for keys in (component, component[u], component[a]):
        order = np.argsort(keys, kind="stable")
        grouped.append((order, keys[order]))
    (nodes_by, node_keys), (joins_by, join_keys), (pairs_by, pair_keys) = grouped
    for c in np.unique(component[a]):
        nodes = nodes_by[_group(node_keys, c)]  # ascending: the sort is stable
        edges = joins_by[_group(join_keys, c)]
        here = pairs_by[_group(pair_keys, c)]
        eu, ev = np.searchsorted(nodes, u[edges]), np.searchsorted(nodes, v[edges])
        capacity = np.maximum(np.rint(overlap[edges]), 1).astype(np.int32)
        for s, t in zip(np.searchsorted(nodes, a[here]), np.searchsorted(nodes, b[here])):
            alive = keep[edges]
            connected = components(len(nodes), eu[alive], ev[alive])
            if connected[s] != connected[t]:
                continue
            cut = _minimum_cut(len(nodes), eu[alive], ev[alive], capacity[alive], s, t)
            keep[edges[np.flatnonzero(alive)[cut]]] = False
    return keep


def _group(sorted_keys: np.ndarray, key) -> slice:
    return slice(np.searchsorted(sorted_keys, key, "left"),
                 np.searchsorted(sorted_keys, key, "right"))


def _minimum_cut(n: int, u, v, capacity, source: int, sink: int) -> np.ndarray:
    """Mask of the undirected edges (u, v) in a minimum source-sink cut."""
    graph = csr_matrix(
        (np.concatenate([capacity, capacity]), (np.concatenate([u, v]), np.concatenate([v, u]))),
        shape=(n, n),
    )
    flow = maximum_flow(graph, source, sink).flow
    residual = (graph - flow).tocsr()
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reachable = np.zeros(n, bool)
    reachable[breadth_first_order(residual, source, directed=True, return_predecessors=False)] = True
    return reachable[u] != reachable[v]


def build_lookup(plan: BlockwisePlan) -> dict:
    """Compute and save the fragment -> final id table; return a summary.

    The graph holds only fragments that a matched pair names (those at block faces),
    so its memory grows with the fragments at faces, not with all of them. The sizes of all
    other fragments, each its own segment, are read block by block, and the table is written to
    disk as it is built.
    """
    counts, matches, separated, kernel_seconds = load_records(plan)
    (u, v, overlap), (cu, cv, c_overlap) = agreed_pairs(*matches)
    base = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    total = int(counts.sum())

    def position(ids):
        """Fragment id (block * block_voxels + local) -> index in 1..total (block order)."""
        block, local = np.divmod(ids.astype(np.int64), plan.block_voxels)
        return base[block] + local

    u, v, cu, cv = position(u), position(v), position(cu), position(cv)
    nodes = np.unique(np.concatenate([u, v, cu, cv]))  # ascending: block order
    # a fragment without a join is a segment of its own: its separations hold already
    sa, sb = position(separated)
    joined_both = np.isin(sa, nodes) & np.isin(sb, nodes)
    sa, sb = sa[joined_both], sb[joined_both]
    n = len(nodes)

    def node_of(ids):
        """Fragment ids -> graph nodes, -1 for fragments outside the graph (needs n > 0)."""
        at = position(ids)
        found = np.minimum(np.searchsorted(nodes, at), n - 1)
        return np.where(nodes[found] == at, found, -1)

    u, v, cu, cv, sa, sb = (np.searchsorted(nodes, x) for x in (u, v, cu, cv, sa, sb))
    joined, keep_join, representative = np.zeros(0, bool), np.zeros(0, bool), np.zeros(0, np.int64)
    n_contained = 0
    if n:
        if len(cu):
            segment = components(n, u, v)
            joined = join_contained(segment, cu, cv, c_overlap,
                                    lambda wanted: load_adjacent(plan, node_of, wanted))
            n_contained = int((joined & (segment[cu] != segment[cv])).sum())
        u, v = np.concatenate([u, cu[joined]]), np.concatenate([v, cv[joined]])
        overlap = np.concatenate([overlap, c_overlap[joined]])
        keep_join = cut_separations(n, u, v, overlap, sa, sb)
        u, v = u[keep_join], v[keep_join]
        component = components(n, u, v)
        # a segment is named by its first fragment, so numbering follows block order
        first = np.full(component.max() + 1, n, np.int64)
        np.minimum.at(first, component, np.arange(n))
        representative = first[component]

    node_block = np.searchsorted(base, nodes, side="left") - 1  # base[b] < position <= base[b+1]
    node_local = nodes - base[node_block]
    node_sizes, node_nn = np.zeros(n), np.zeros(n)
    outside_kept = np.zeros(plan.num_blocks, np.int64)
    for index, sizes, nn_sums in block_sizes(plan):
        here = slice(*np.searchsorted(node_block, [index, index + 1]))
        node_sizes[here] = sizes[node_local[here]]
        if nn_sums is not None:
            node_nn[here] = nn_sums[node_local[here]]
        kept = _kept(plan, sizes, nn_sums)
        kept[node_local[here]] = False
        outside_kept[index] = int(kept.sum())
    segment_kept = segment_keep_mask(
        np.bincount(representative, node_sizes, minlength=n), plan.parameters.min_size,
        plan.parameters.threshold, np.bincount(representative, node_nn, minlength=n),
    ) & (representative == np.arange(n))
    n_segments = int(outside_kept.sum() + segment_kept.sum())
    if n_segments > MAX_SEGMENTS:
        raise MutexWatershedError(
            f"{n_segments} segments do not fit the uint32 output; use larger min_size or a "
            "smaller region (--roi)"
        )

    lookup = np.lib.format.open_memmap(
        plan.lookup_path.with_suffix(f".{os.getpid()}.tmp.npy"), mode="w+",
        dtype=smallest_label_dtype(n_segments), shape=(total + 1,),
    )
    lookup[0] = 0
    segment_id = np.zeros(n, np.int64)
    next_id = 0
    for index, sizes, nn_sums in block_sizes(plan):
        here = slice(*np.searchsorted(node_block, [index, index + 1]))
        kept = _kept(plan, sizes, nn_sums)
        locals_here = node_local[here]
        kept[locals_here] = segment_kept[here]  # a node is kept as the first of its segment
        ids = np.where(kept, np.cumsum(kept) + next_id, 0)
        next_id += int(kept.sum())
        segment_id[here] = ids[locals_here]
        # the rest of a segment follows its first fragment, in this block or an earlier one
        ids[locals_here] = segment_id[representative[here]]
        lookup[base[index] + 1 : base[index] + counts[index] + 1] = ids[1:]
    lookup.flush()
    partial = Path(lookup.filename)
    del lookup
    os.replace(partial, plan.lookup_path)
    partial = plan.bases_path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(partial, base)
    os.replace(partial, plan.bases_path)
    return {"fragments": total, "stitched_pairs": len(u),
            "contained_pairs": n_contained,
            "cut_pairs": int((~keep_join).sum()), "segments": n_segments,
            "kernel_seconds": round(kernel_seconds, 3)}


def _kept(plan: BlockwisePlan, sizes, nn_sums) -> np.ndarray:
    """Which of these segments (indices; 0 is never one) survive the size and affinity filters."""
    keep = segment_keep_mask(sizes, plan.parameters.min_size, plan.parameters.threshold, nn_sums)
    keep[0] = False
    return keep
