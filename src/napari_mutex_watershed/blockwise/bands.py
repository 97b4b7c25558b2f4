"""Which voxels of an even block the odd blocks around it label again.

Near a face an even block saw least of what lies beyond it, so the odd block across that
face, which runs later with the even labels around it as seeds, labels a band of
``plan.band`` voxels on the even side again. Voxels within the band of two faces keep their
even label: two odd blocks never see each other's labels, so neither could continue the
other's there.
Everything here is geometry, the same for every block that asks.
"""

from __future__ import annotations

import math

import numpy as np


def band_owner(lo, hi, block_size, grid_shape, band) -> np.ndarray:
    """Per voxel of the box [lo, hi): flat index of the odd block that labels it again, or -1
    (voxels of odd blocks, and even voxels outside every band or inside two).

    Built from one-dimensional profiles per axis in the smallest integers that hold them,
    so a block's worth of voxels costs a few whole-box operations: 3 to 5 ms for an odd
    block's box at 256^3, where int64 temporaries took 13 to 67 ms.
    """
    ndim = len(lo)
    strides = np.cumprod((1,) + tuple(grid_shape[:0:-1]))[::-1]  # of the flat block index
    dtype = np.int32 if math.prod(grid_shape) < 2**31 else np.int64

    def along(axis, values, kind):
        return np.asarray(values, kind).reshape([-1 if d == axis else 1 for d in range(ndim)])

    faces, parity, index = 0, 0, 0
    for axis, (a, b) in enumerate(zip(lo, hi)):
        position, within = np.divmod(np.arange(a, b), block_size[axis])
        width = band[axis]
        below = (within < width) & (position > 0)
        above = (block_size[axis] - 1 - within < width) & (position < grid_shape[axis] - 1)
        faces = faces + along(axis, below.astype(np.int8) + above, np.int8)
        parity = parity ^ along(axis, position & 1, np.int8)
        # this axis's part of the flat index of the block across the face whose band the
        # voxel is in (its own block's part off the bands; used only where one band is)
        index = index + along(axis, (position + above - below) * strides[axis], dtype)
    return np.where((faces == 1) & (parity == 0), index, dtype(-1))


def band_boxes(position, plan):
    """(axis, step, lo, hi) of the slabs an odd block labels again: one per even face
    neighbour, on the neighbour's side of the shared face, clipped to the neighbour."""
    core = plan.core(position)
    lo, hi = tuple(core.begin), tuple(core.end)
    for axis, width in enumerate(plan.band):
        if width <= 0:
            continue
        for step in (-1, 1):
            neighbour = position[axis] + step
            if not 0 <= neighbour < plan.grid_shape[axis]:
                continue
            n_lo = neighbour * plan.block_size[axis]
            n_hi = min(n_lo + plan.block_size[axis], plan.shape[axis])
            slab_lo, slab_hi = list(lo), list(hi)
            if step < 0:
                slab_lo[axis], slab_hi[axis] = max(lo[axis] - width, n_lo), lo[axis]
            else:
                slab_lo[axis], slab_hi[axis] = hi[axis], min(hi[axis] + width, n_hi)
            yield axis, step, tuple(slab_lo), tuple(slab_hi)


def band_key(axis: int, step: int) -> str:
    """Record key of an odd block's band on the neighbour at ``step`` along ``axis``."""
    return f"band_{axis}{'-' if step < 0 else '+'}"
