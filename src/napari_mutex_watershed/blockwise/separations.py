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
    put the two together elsewhere. One pass over the edges of each offset serves both: the
    offsets that are unit steps give the touching pairs.
    """
    trusted = trusted_region(local.shape, inner_faces, margin)
    if trusted is None:
        return np.zeros((2, 0), np.uint32), np.zeros(0)
    labels = local[trusted]
    n_labels = int(labels.max(initial=0)) + 1
    allowed = np.ones(n_labels, bool) if wanted is None else wanted[:n_labels].copy()
    allowed[0] = False
    allowed = allowed[labels]
    unit_channel = {axis: c for c, axis in enumerate(map(_unit_axis, offsets))
                    if axis is not None}
    crossing = {}  # unit-step channel -> what _edges_among found for it
    touching = [np.zeros(0, np.uint64)]
    for axis in range(local.ndim):
        channel = unit_channel.get(axis)
        step = tuple(int(d == axis) for d in range(local.ndim)) if channel is None \
            else offsets[channel]
        edges = _edges_among(labels, step, allowed)
        touching.append(edges[0])
        if channel is not None:
            crossing[channel] = edges
    wanted_keys = np.unique(np.concatenate(touching))
    pairs = np.stack([wanted_keys >> np.uint64(32),
                      wanted_keys & np.uint64(0xFFFFFFFF)]).astype(np.uint32)
    total = np.zeros(len(wanted_keys))
    if not len(wanted_keys):
        return pairs, total
    # the other offsets' edges matter only between fragments of a separated pair
    in_pair = np.zeros(n_labels, bool)
    in_pair[pairs.ravel()] = True
    in_pair[0] = False
    in_pair = in_pair[labels]
    for channel, offset in enumerate(offsets):
        keys, source, between = crossing.get(channel) or _edges_among(labels, offset, in_pair)
        # edges of the separated pairs only: a lookup in the sorted keys
        at = np.minimum(np.searchsorted(wanted_keys, keys), len(wanted_keys) - 1)
        hit = wanted_keys[at] == keys
        total += np.bincount(at[hit], weights[channel][trusted][source][between][hit],
                             minlength=len(wanted_keys))
    return pairs, np.maximum(-total, 0.0)


def _edges_among(labels, offset, allowed_voxel):
    """Keys of the edges of ``offset`` between two different labels whose voxels are both
    ``allowed_voxel``; the slices of the edges' sources and the mask of those edges there."""
    source, target = edge_slices(offset, labels.shape)
    a, b = labels[source], labels[target]
    between = (a != b) & allowed_voxel[source] & allowed_voxel[target]
    return pair_keys(a[between], b[between]), source, between


def _unit_axis(offset) -> int | None:
    """The axis of a unit step (either direction), None for any other offset."""
    nonzero = [axis for axis, o in enumerate(offset) if o]
    return nonzero[0] if len(nonzero) == 1 and abs(offset[nonzero[0]]) == 1 else None


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
