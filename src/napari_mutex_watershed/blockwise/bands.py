"""Which voxels of an even block the odd blocks around it label again.

Near a face an even block saw least of what lies beyond it, so the odd block across that
face, which runs later with the even labels around it as seeds, labels a band of
``plan.band`` voxels on the even side again. Voxels within the band of two faces keep their
even label: two odd blocks never see each other's labels, so neither could continue the
other's there.
Everything here is geometry, the same for every block that asks.
"""

from __future__ import annotations

import numpy as np


def band_owner(lo, hi, block_size, grid_shape, band) -> np.ndarray:
    """Per voxel of the box [lo, hi): flat index of the odd block that labels it again, or -1
    (voxels of odd blocks, and even voxels outside every band or inside two).

    Built from one-dimensional profiles per axis, so a block's worth of voxels costs a few
    whole-box integer operations.
    """
    shape = tuple(b - a for a, b in zip(lo, hi))
    ndim = len(shape)
    strides = np.cumprod((1,) + tuple(grid_shape[:0:-1]))[::-1]  # of the flat block index

    def along(axis, values):
        return np.asarray(values).reshape([-1 if d == axis else 1 for d in range(ndim)])

    faces, flat, parity, toward = 0, 0, 0, []
    for axis, (a, b) in enumerate(zip(lo, hi)):
        x = np.arange(a, b)
        position, within = np.divmod(x, block_size[axis])
        width = band[axis]
        below = (within < width) & (position > 0)
        above = (block_size[axis] - 1 - within < width) & (position < grid_shape[axis] - 1)
        faces = faces + along(axis, below.astype(np.int8) + above)
        # the neighbour across the face this axis's band touches (both only when faces >= 2)
        toward.append(along(axis, np.where(below, -1, np.where(above, 1, 0)) * strides[axis]))
        flat = flat + along(axis, position * strides[axis])
        parity = parity + along(axis, position)
    owner = np.full(shape, -1, np.int64)
    single = np.broadcast_to((faces == 1) & (parity % 2 == 0), shape)
    step = sum(np.broadcast_to(t, shape) for t in toward)
    owner[single] = np.broadcast_to(flat, shape)[single] + step[single]
    return owner


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
