"""Step 3 of a blockwise run: join fragments across blocks and number the segments.

An odd fragment joins every even label it took in as a seed, weighted by the overlap. Two
fragments that a block kept apart deep inside it repel, weighted by how strongly the
affinities between them repel there. A mutex watershed over these edges, strongest first,
decides what is one segment: a join is taken unless a separation already stands between the
two sides, so a weak join cannot put two objects together that a block saw apart, and a
block that kept apart what the affinities join (forced by its seeds, or blind to the way
round that the whole volume has) cannot cut a strong join. The graph has one edge per join,
so it grows with the area of the block faces, not with the volume. The result is a lookup
table from every fragment to its final consecutive id, where the size and affinity filters
are applied to whole segments.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import mwatershed
import numpy as np

from ..engine.labels import segment_keep_mask, smallest_label_dtype
from ..errors import IncompleteRunError
from .disk import allocated_memmap, temporary_name
from .mask_seeds import check_ids_fit, load_seeds
from .plan import BlockwisePlan

#: A separation weighs SEPARATION_WEIGHT times its summed repulsion (minus the summed
#: affinity minus bias over the edges between the two fragments), in voxels of overlap, and at
#: least SEPARATION_FLOOR: no weak join crosses a separation whose contact repels. Chosen in
#: docs/blockwise.md.
SEPARATION_WEIGHT = 3.0
SEPARATION_FLOOR = 100.0


def load_records(plan: BlockwisePlan):
    """Fragments per block; all joins (u, v) with their overlap; all separations (a, b) with
    their strength, as fragment ids; the summed kernel and block times. Sizes stay on disk:
    see ``block_sizes``."""
    counts, joins, overlap, separated, strength = [], [], [], [], []
    seconds = {"kernel_seconds": 0.0, "block_seconds": 0.0}
    for index in range(plan.num_blocks):
        path = plan.block_record(index)
        if not path.exists():
            position = tuple(int(p) for p in np.unravel_index(index, plan.grid_shape))
            raise IncompleteRunError(f"block {position} has no fragments: steps 1 and 2 did "
                                     "not finish")
        with np.load(path) as record:
            counts.append(len(record["sizes"]) - 1)
            base = np.uint64(index) * np.uint64(plan.ids_per_block)
            separated.append(record["separated"].astype(np.uint64) + base)
            strength.append(record["strength"])
            joins.append(record["joins"].astype(np.uint64))
            overlap.append(record["overlap"])
            for name in seconds:
                seconds[name] += float(record[name]) if name in record.files else 0.0
    return (np.array(counts, np.int64), np.concatenate(joins, axis=1), np.concatenate(overlap),
            np.concatenate(separated, axis=1), np.concatenate(strength), seconds)


def block_sizes(plan: BlockwisePlan):
    """(index, sizes, affinity sums or None) of every block in order, read one at a time."""
    wants_nn = plan.parameters.threshold > 0
    for index in range(plan.num_blocks):
        with np.load(plan.block_record(index)) as record:
            yield index, record["sizes"], record["nn_sums"] if wants_nn else None


def join_fragments(n: int, u, v, overlap, a, b, strength, node_seed=None) -> np.ndarray:
    """Per node: the node that names its segment. Joins (u, v) attract with their overlap;
    separations (a, b) whose contact repels (strength > 0) repel, see SEPARATION_WEIGHT.
    Nodes with the same ``node_seed`` (0: none) are one segment, two seed ids never one."""
    real = n
    if node_seed is not None and node_seed.any():
        n, u, v, overlap, a, b, strength = with_seed_nodes(n, u, v, overlap, a, b, strength,
                                                           node_seed)
    component = components(n, u, v)
    # a separation between two join components can never be violated
    matters = (component[a] == component[b]) & (strength > 0)
    a, b, strength = a[matters], b[matters], strength[matters]
    repulsion = np.maximum(SEPARATION_WEIGHT * strength, SEPARATION_FLOOR)
    weight = np.concatenate([np.asarray(overlap, float), repulsion])
    attractive = np.r_[np.ones(len(u), bool), np.zeros(len(a), bool)]
    ends = np.concatenate([np.stack([u, v]), np.stack([a, b])], axis=1)
    order = np.argsort(-weight, kind="stable")
    clusters = dict(mwatershed.cluster(
        [(bool(attractive[i]), int(ends[0, i]), int(ends[1, i])) for i in order]))
    segment = np.unique([clusters.get(i, i) for i in range(n)], return_inverse=True)[1].ravel()
    # the smallest node of each segment names it, so numbering follows block order
    first = np.full(n, n, np.int64)
    np.minimum.at(first, segment, np.arange(n))
    return first[segment][:real]


def with_seed_nodes(n: int, u, v, overlap, a, b, strength, node_seed):
    """The graph with one more node per seed id: every seeded node joins its seed's node
    before anything else, and the seed nodes that joins connect are separated pairwise
    before any join is taken (the kernel's rule within a block, here across blocks)."""
    seeded = np.flatnonzero(node_seed)
    seed_ids, which = np.unique(node_seed[seeded], return_inverse=True)
    seed_nodes = n + np.arange(len(seed_ids))
    n_all = n + len(seed_ids)
    u, v = np.concatenate([u, seeded]), np.concatenate([v, seed_nodes[which]])
    component = components(n_all, u, v)[seed_nodes]
    order = np.argsort(component, kind="stable")
    groups = np.split(seed_nodes[order], np.flatnonzero(np.diff(component[order])) + 1)
    pairs = [pair for group in groups for pair in itertools.combinations(group, 2)]
    pairs = np.array(pairs, np.int64).reshape(-1, 2).T
    return (n_all, u, v, np.r_[np.asarray(overlap, float), np.full(len(seeded), np.inf)],
            np.r_[a, pairs[0]], np.r_[b, pairs[1]], np.r_[strength, np.full(pairs.shape[1],
                                                                              np.inf)])


def components(n: int, u, v) -> np.ndarray:
    """Per node, its connected component over the edges (u, v), numbered in the order of
    each component's smallest node (as scipy's ``connected_components``). Each round hooks
    every root to the smallest root it has an edge to, then points every node at its root: a
    few rounds (10 for a path of 10^5 nodes in random order). numpy only: importing scipy's
    graphs took 0.1 s of the job process's start, before the first block (docs/blockwise.md,
    *Speed*)."""
    root = np.arange(n)
    u, v = np.asarray(u, np.intp), np.asarray(v, np.intp)
    while True:
        ru, rv = root[u], root[v]
        apart = ru != rv
        if not apart.any():
            return np.unique(root, return_inverse=True)[1].ravel()
        u, v, ru, rv = u[apart], v[apart], ru[apart], rv[apart]
        np.minimum.at(root, np.maximum(ru, rv), np.minimum(ru, rv))
        while True:
            up = root[root]
            if np.array_equal(up, root):
                break
            root = up


def build_lookup(plan: BlockwisePlan) -> dict:
    """Compute and save the fragment -> final id table; return a summary.

    The graph holds only fragments that a join names (those at block faces),
    so its memory grows with the fragments at faces, not with all of them. The sizes of all
    other fragments, each its own segment, are read block by block, and the table is written to
    disk as it is built.
    """
    counts, joins, overlap, separated, strength, seconds = load_records(plan)
    base = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    total = int(counts.sum())

    def position(ids):
        """Fragment id (block * ids_per_block + local) -> index in 1..total (block order)."""
        block, local = np.divmod(ids.astype(np.int64), plan.ids_per_block)
        return base[block] + local

    u, v = position(joins)
    # seeded fragments are nodes even without a join: their segment takes the seed id
    seeded, seed_ids, seed_max = load_seeds(plan)
    check_ids_fit(0, seed_max)
    seeded = position(seeded)
    nodes = np.unique(np.concatenate([u, v, seeded]))  # ascending: block order
    # a fragment without a join is a segment of its own: its separations hold already
    sa, sb = position(separated)
    joined_both = np.isin(sa, nodes) & np.isin(sb, nodes)
    sa, sb, strength = sa[joined_both], sb[joined_both], strength[joined_both]
    n = len(nodes)
    u, v, sa, sb = (np.searchsorted(nodes, x) for x in (u, v, sa, sb))
    node_seed = np.zeros(n, np.int64)
    node_seed[np.searchsorted(nodes, seeded)] = seed_ids.astype(np.int64)
    representative = (join_fragments(n, u, v, overlap, sa, sb, strength, node_seed) if n
                      else np.zeros(0, np.int64))
    segment_seed = np.zeros(n, np.int64)  # at each segment's first node, as segment() keeps
    np.maximum.at(segment_seed, representative, node_seed)  # seeded ids whatever the filters

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
    ) & (representative == np.arange(n)) & (segment_seed == 0)
    n_segments = int(outside_kept.sum() + segment_kept.sum())
    check_ids_fit(n_segments, seed_max)

    lookup = allocated_memmap(temporary_name(plan.lookup_path),
                              smallest_label_dtype(seed_max + n_segments), (total + 1,))
    lookup[0] = 0
    segment_id = np.zeros(n, np.int64)
    next_id = seed_max
    for index, sizes, nn_sums in block_sizes(plan):
        here = slice(*np.searchsorted(node_block, [index, index + 1]))
        kept = _kept(plan, sizes, nn_sums)
        locals_here = node_local[here]
        kept[locals_here] = segment_kept[here]  # a node is kept as the first of its segment
        ids = np.where(kept, np.cumsum(kept) + next_id, 0)
        next_id += int(kept.sum())
        segment_id[here] = np.where(segment_seed[here] > 0, segment_seed[here],
                                    ids[locals_here])
        # the rest of a segment follows its first fragment, in this block or an earlier one
        ids[locals_here] = segment_id[representative[here]]
        lookup[base[index] + 1 : base[index] + counts[index] + 1] = ids[1:]
    lookup.flush()
    partial = Path(lookup.filename)
    del lookup
    os.replace(partial, plan.lookup_path)
    partial = temporary_name(plan.bases_path)
    np.save(partial, base)
    os.replace(partial, plan.bases_path)
    joined = representative[u] == representative[v]
    return {"fragments": total, "joins": len(u), "joins_refused": int((~joined).sum()),
            "segments": n_segments + int(np.count_nonzero(segment_seed)),
            **{name: round(value, 3) for name, value in seconds.items()}}


def _kept(plan: BlockwisePlan, sizes, nn_sums) -> np.ndarray:
    """Which of these segments (indices; 0 is never one) survive the size and affinity filters."""
    keep = segment_keep_mask(sizes, plan.parameters.min_size, plan.parameters.threshold, nn_sums)
    keep[0] = False
    return keep
