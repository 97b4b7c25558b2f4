"""The shape of a run's blocks: given, the whole region when it is small, or chosen from
the region so that a worker's memory does not grow with it.

Pure numpy (no funlib): the widget shows and resolves the same choice the command makes.
"""

from __future__ import annotations

import numpy as np

from ..parameters import WatershedParameters

#: The largest block shape chosen when none is given, by the number of spatial axes. In 3D,
#: half as deep as wide like the default halo (6, 12, 12): on 256^3 neuron crops with 2
#: workers it was the fastest of 64^3, 128^3 and 64 x 128 x 128 (less kernel time on halos
#: than 64^3, twice the blocks of 128^3 to balance), measured in docs/blockwise.md, *Speed
#: and memory*.
DEFAULT_BLOCK_SIZE = {3: (64, 128, 128), 2: (512, 512)}
#: The most voxels a block's kernel box (its core and the odd blocks' halo) holds when the
#: block size is chosen: a worker's memory is set by it (``default_block_size``). In 3D the
#: largest box of 64 x 128 x 128 blocks on 256^3, 76 x 144 x 144 (1.58 M voxels, a worker's
#: peak about 1.1 GB with six uint8 channels), rounded up; in 2D an interior 512^2 block's.
DEFAULT_BOX_VOXELS = {3: 1_600_000, 2: 300_000}
#: Regions up to this many voxels are one block unless a block size is given: below it one
#: kernel call in the job process beats blocks and workers (docs/blockwise.md, *Speed*).
WHOLE_REGION_VOXELS = 2**22
#: How many times the fewest blocks along an axis ``default_block_size`` tries at most.
OVERSPLIT = 2


def is_small_region(shape) -> bool:
    """A region that is one block unless a block size is given (``WHOLE_REGION_VOXELS``)."""
    return np.prod(shape, dtype=float) <= WHOLE_REGION_VOXELS


def block_size_for(shape, parameters: WatershedParameters, given=None) -> tuple[int, ...]:
    """The block shape of a run over a region of ``shape`` voxels: ``given`` (clipped to the
    region), else the whole region when it is small, else ``default_block_size``."""
    if given is None and is_small_region(shape):
        return tuple(int(s) for s in shape)
    if given is None:
        return default_block_size(shape, odd_halo(parameters))
    return tuple(min(int(b), int(s)) for b, s in zip(given, shape))


def default_block_size(shape, halo) -> tuple[int, ...]:
    """The block shape chosen for a region: blocks no larger than ``DEFAULT_BLOCK_SIZE`` whose
    kernel boxes hold at most ``DEFAULT_BOX_VOXELS``, and of those the even grid whose boxes
    hold the fewest voxels in all (the kernel's work). A worker's memory then does not grow
    with the region: an interior block, which has a halo on every face, is smaller than
    one at the edge of a grid of two. If no block at least ``1 / OVERSPLIT`` of the largest
    fits (very long offsets), the largest, clipped to the region."""
    largest = [min(b, s) for b, s in zip(DEFAULT_BLOCK_SIZE[len(shape)], shape)]
    axes = [_axis_grids(s, b, h) for s, b, h in zip(shape, largest, halo)]
    core, box, work = (np.array(np.meshgrid(*[axis[i] for axis in axes], indexing="ij"))
                       for i in range(3))
    box, work = box.prod(axis=0), work.prod(axis=0)
    fits = box <= DEFAULT_BOX_VOXELS[len(shape)]
    if not fits.any():
        return tuple(largest)
    best = np.unravel_index(np.where(fits, work, np.inf).argmin(), work.shape)
    return tuple(int(c) for c in core[(slice(None), *best)])


def _axis_grids(size: int, largest: int, halo: int):
    """Along one axis, for every even grid of ``largest`` blocks or smaller: the block, the
    largest kernel box (an interior block's) and the voxels of all the boxes."""
    fewest = -(-size // largest)
    cores = sorted({-(-size // n) for n in range(fewest, OVERSPLIT * fewest + 1)}, reverse=True)
    cores = [c for c in cores if c == size or c > halo]  # a halo reaches one block only
    counts = [-(-size // c) for c in cores]
    boxes = [min(size, c + halo * min(2, n - 1)) for c, n in zip(cores, counts)]
    works = [size + 2 * halo * (n - 1) for n in counts]
    return cores, boxes, works


def odd_halo(parameters: WatershedParameters) -> tuple[int, ...]:
    """Halo of an odd block, the widest of a run: it reaches one longest offset beyond the
    band it relabels, so every edge of a band voxel is in view."""
    return tuple(max(int(c), b + int(v)) for c, b, v in
                 zip(parameters.context_voxels(), band_width(parameters), _longest(parameters)))


def band_width(parameters: WatershedParameters) -> tuple[int, ...]:
    """Voxels on the even side of a face that the odd block across it labels again.

    There the even block, blind beyond its halo, decided worst. Three quarters of the
    longest offset along each axis: (3, 7, 7) for the default offsets, the band measured in
    docs/blockwise.md.
    """
    return tuple(int(np.ceil(0.75 * v)) for v in _longest(parameters))


def _longest(parameters: WatershedParameters) -> np.ndarray:
    """The longest offset along each axis."""
    return np.abs(np.array(parameters.offsets)).max(axis=0)
