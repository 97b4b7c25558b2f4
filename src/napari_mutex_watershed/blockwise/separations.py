"""Which fragments a block kept apart, and how strongly: the stitch's separations.

A block records pairs of its fragments that touch deep inside it (far enough from every face
it shares with another block to have seen all around) and how strongly the affinities
between them repel; the stitch keeps those apart unless the joins between them are
stronger. Used by the even and the odd blocks.
"""

from __future__ import annotations

import numpy as np

from ..engine import edge_slices


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


def separated_pairs(local: np.ndarray, inner_faces, margin: int, wanted=None) -> np.ndarray:
    """(2, n) local ids of fragment pairs that touch at least ``margin`` voxels from every face
    the block shares with another block (both ``wanted``, a flag per local id, if given).

    Near a face a block lacks what lies beyond its halo, and its separations there are as
    unreliable as its merges; deep inside it saw all around. ``inner_faces`` is, per axis,
    whether there is a block (below, above).
    """
    trusted = trusted_region(local.shape, inner_faces, margin)
    if trusted is None:
        return np.zeros((2, 0), np.uint32)
    steps = [tuple(int(d == axis) for d in range(local.ndim)) for axis in range(local.ndim)]
    return touching_pairs(local[trusted], steps, wanted)


def separation_strength(local, weights, offsets, inner_faces, margin, pairs) -> np.ndarray:
    """Per separated pair: minus the summed weight of every edge (any offset) between the two
    fragments in the trusted region; 0 where that sum attracts.

    A block may keep apart two fragments the affinities join, because of seeds or because it
    could not see the path around that the whole volume has; such a separation must not
    outweigh the joins that put the two together elsewhere.
    """
    trusted = trusted_region(local.shape, inner_faces, margin)
    if trusted is None or pairs.shape[1] == 0:
        return np.zeros(pairs.shape[1])
    labels = local[trusted]
    wanted = pair_keys(*pairs)
    order = np.argsort(wanted)
    in_pair = np.zeros(int(labels.max(initial=0)) + 1, bool)
    in_pair[pairs.ravel()] = True
    in_pair[0] = False
    total = np.zeros(len(wanted))
    for channel, offset in enumerate(offsets):
        source, target = edge_slices(offset, labels.shape)
        a, b, between = edges_among(labels[source], labels[target], in_pair)
        keys = pair_keys(a, b)
        # edges of the wanted pairs only: a lookup, not a sort of every edge
        at = order[np.minimum(np.searchsorted(wanted, keys, sorter=order), len(wanted) - 1)]
        hit = wanted[at] == keys
        total += np.bincount(at[hit], weights[channel][trusted][source][between][hit],
                             minlength=len(wanted))
    return np.maximum(-total, 0.0)


def edges_among(a: np.ndarray, b: np.ndarray, allowed: np.ndarray):
    """The ends (a, b) of the edges between two different labels that are both ``allowed``
    (a flag per label, False for 0), and the mask that picked them. Most edges lie inside one
    fragment, so the flags are looked up only for the few that cross."""
    candidate = a != b
    a, b = a[candidate], b[candidate]
    keep = allowed[a] & allowed[b]
    candidate[candidate] = keep
    return a[keep], b[keep], candidate


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


def touching_pairs(local: np.ndarray, steps, wanted=None) -> np.ndarray:
    """(2, n) unique pairs (low, high) of different non-zero labels linked by one of ``steps``
    (both ``wanted``, a flag per label, if given)."""
    allowed = np.ones(int(local.max(initial=0)) + 1, bool) if wanted is None else wanted.copy()
    allowed[0] = False
    keys = [np.zeros(0, np.uint64)]
    for step in steps:
        source, target = edge_slices(step, local.shape)
        a, b, _ = edges_among(local[source], local[target], allowed)
        keys.append(pair_keys(a, b))
    keys = np.unique(np.concatenate(keys))
    return np.stack([keys >> np.uint64(32), keys & np.uint64(0xFFFFFFFF)]).astype(np.uint32)
