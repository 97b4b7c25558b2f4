"""Which voxels of an even block the odd blocks around it label again.

Near a face an even block saw least of what lies beyond it, so the odd block across that
face, which runs later with the even labels around it as seeds, labels a band of
``plan.band`` voxels on the even side again. A voxel belongs to the face it is nearest to
(distance over band width). Voxels within the band of two faces keep their even label: two
odd blocks never see each other's labels, so neither could continue the other's there.
Everything here is geometry, the same for every block that asks.
"""

from __future__ import annotations

import numpy as np


def band_owner(lo, hi, block_size, grid_shape, band) -> np.ndarray:
    """Per voxel of the box [lo, hi): flat index of the odd block that labels it again, or -1
    (voxels of odd blocks, and even voxels outside every band or inside two)."""
    shape = tuple(b - a for a, b in zip(lo, hi))
    ndim = len(shape)
    axes = [np.arange(a, b).reshape([-1 if d == axis else 1 for d in range(ndim)])
            for axis, (a, b) in enumerate(zip(lo, hi))]
    position = [x // s for x, s in zip(axes, block_size)]
    owner = np.full(shape, -1, np.int64)
    nearest = np.full(shape, np.inf)
    faces = np.zeros(shape, np.int8)
    for axis, width in enumerate(band):
        if width <= 0:
            continue
        within = axes[axis] - position[axis] * block_size[axis]
        for step in (-1, 1):
            distance = (within if step < 0 else block_size[axis] - 1 - within) + 0.5
            neighbour = list(position)
            neighbour[axis] = position[axis] + step
            exists = (neighbour[axis] >= 0) & (neighbour[axis] < grid_shape[axis])
            norm = np.broadcast_to(distance / width, shape)
            inside = np.broadcast_to(exists, shape) & (norm < 1)
            faces += inside
            take = inside & (norm < nearest)
            nearest[take] = norm[take]
            clipped = [np.clip(np.broadcast_to(q, shape), 0, g - 1)
                       for q, g in zip(neighbour, grid_shape)]
            flat = np.ravel_multi_index(clipped, grid_shape)
            owner[take] = flat[take]
    odd = sum(np.broadcast_to(p, shape) for p in position) % 2 == 1
    owner[odd | (faces >= 2)] = -1
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
