"""Which fragments a block kept apart, and how strongly: the stitch's separations.

A block records pairs of its fragments that touch deep inside it (far enough from every face
it shares with another block to have seen all around) and how strongly the affinities
between them repel; the stitch keeps those apart unless the joins between them are
stronger. Used by the even and the odd blocks.
"""

from __future__ import annotations

import numpy as np

from ..engine import edge_slices

#: Largest table of pair positions, indexed by the two fragments' ranks among those in a
#: pair (``_pair_positions``): 16 MB of int32, 2047 such fragments; more take the sorted keys.
PAIR_TABLE_ENTRIES = 2**22


def trusted_region(shape, inner_faces, margin):
    """Slices of the part of a block at least ``margin`` voxels from every face it shares with
    another block, or None if there is none."""
    trusted = []
    for size, (below, above) in zip(shape, inner_faces):
        lo = margin if below else 0
        hi = size - margin if above else size
        if lo >= hi:
            return None
        trusted.append(slice(lo, hi))
    return tuple(trusted)


def separations(local: np.ndarray, weights, offsets, inner_faces, margin: int, wanted=None):
    """The block's separations: (2, n) local ids (low, high) of the fragment pairs that touch
    at least ``margin`` voxels from every face it shares with another block (both
    ``wanted``, a flag per local id, if given), and per pair how strongly the affinities
    between the two repel there: minus the summed weight of every edge (any offset) between
    them, 0 where that sum attracts.

    Near a face a block lacks what lies beyond its halo, and its separations there are as
    unreliable as its merges; deep inside it saw all around. ``inner_faces`` is, per axis,
    whether there is a block (below, above). A block may keep apart two fragments the
    affinities join, because of seeds or because it could not see the path around that the
    whole volume has; the strength keeps such a separation from outweighing the joins that
    put the two together elsewhere. The unit steps give the touching pairs; then one pass
    over the edges of each offset sums their strength.
    """
    trusted = trusted_region(local.shape, inner_faces, margin)
    if trusted is None:
        return np.zeros((2, 0), np.uint32), np.zeros(0)
    labels = local[trusted]
    n_labels = int(labels.max(initial=0)) + 1
    allowed = np.ones(n_labels, bool) if wanted is None else wanted[:n_labels].copy()
    allowed[0] = False
    allowed = allowed.take(labels)
    touching = [np.zeros(0, np.uint64)]
    for axis in range(local.ndim):
        step = tuple(int(d == axis) for d in range(local.ndim))
        touching.append(_edges_among(labels, *edge_slices(step, labels.shape), allowed)[0])
    wanted_keys = np.unique(np.concatenate(touching))
    pairs = np.stack([wanted_keys >> np.uint64(32),
                      wanted_keys & np.uint64(0xFFFFFFFF)]).astype(np.uint32)
    total = np.zeros(len(wanted_keys))
    if not len(wanted_keys):
        return pairs, total
    positions = _pair_positions(labels, pairs, wanted_keys, n_labels)
    for channel, offset in enumerate(offsets):
        source, target = edge_slices(offset, labels.shape)
        at, edges = positions(source, target)
        total += np.bincount(at, weights[channel][trusted][source][edges],
                             minlength=len(wanted_keys))
    return pairs, np.maximum(-total, 0.0)


def _pair_positions(labels, pairs, wanted_keys, n_labels):
    """A function of an offset's (source, target) slices: the position among ``pairs`` of
    each edge between the two fragments of a pair, and the mask of those edges over the
    source. Fragments in a pair are few (hundreds in a block at 256^3, covering most of its
    voxels): a table by their ranks answers with one lookup per edge where the sorted keys
    need a search (the separations in 0.63 to 0.71 of the time, docs/blockwise.md); the
    keys serve when the table would be too large."""
    members = np.unique(pairs)
    width = len(members) + 1  # rank 0: in no pair
    rank = np.zeros(n_labels, np.int32)
    rank[members] = np.arange(1, width, dtype=np.int32)
    ranks = rank.take(labels)
    if width * width <= PAIR_TABLE_ENTRIES:
        table = np.full(width * width, -1, np.int32)
        low, high = rank[pairs[0]], rank[pairs[1]]
        table[low * width + high] = table[high * width + low] = np.arange(len(pairs[0]))
        rows = ranks * np.int32(width)

        def by_table(source, target):
            at = table.take(rows[source] + ranks[target])
            edges = at >= 0
            return at[edges], edges

        return by_table

    in_pair = ranks > 0

    def by_keys(source, target):
        keys, between = _edges_among(labels, source, target, in_pair)
        at = np.minimum(np.searchsorted(wanted_keys, keys), len(wanted_keys) - 1)
        hit = wanted_keys[at] == keys
        between[between] = hit
        return at[hit], between

    return by_keys


def _edges_among(labels, source, target, allowed_voxel):
    """Keys of the edges from ``source`` to ``target`` (an offset's slices) between two
    different labels whose voxels are both ``allowed_voxel``, and the mask of those edges
    over the source."""
    a, b = labels[source], labels[target]
    between = (a != b) & allowed_voxel[source] & allowed_voxel[target]
    return pair_keys(a[between], b[between]), between


def pair_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One uint64 per unordered pair of 32-bit labels: (low << 32) | high."""
    a, b = a.astype(np.uint64), b.astype(np.uint64)
    return (np.minimum(a, b) << np.uint64(32)) | np.maximum(a, b)


def face_fragments(local: np.ndarray, inner_faces, context) -> np.ndarray:
    """Per local id: does the fragment reach within ``context`` of a face the block shares
    with another block? Only those can be joined, so the stitch step needs no pair of
    fragments that are not both at a face (on data with many small fragments, most pairs)."""
    near_face = np.zeros(local.shape, bool)
    for axis, ((below, above), reach) in enumerate(zip(inner_faces, context)):
        band = [slice(None)] * local.ndim
        if below:
            band[axis] = slice(0, reach)
            near_face[tuple(band)] = True
        if above:
            band[axis] = slice(max(local.shape[axis] - reach, 0), None)
            near_face[tuple(band)] = True
    at_face = np.zeros(int(local.max()) + 1, bool)
    at_face[local[near_face]] = True
    at_face[0] = False
    return at_face
