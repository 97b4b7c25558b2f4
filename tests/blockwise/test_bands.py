"""Which even voxels the odd blocks label again, and where those bands are kept."""

import numpy as np

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.blockwise.bands import band_boxes, band_owner
from napari_mutex_watershed.blockwise.plan import BlockwisePlan


def make_plan(shape, block_size, offsets) -> BlockwisePlan:
    return BlockwisePlan(input_path="i", output_path="o", work_dir="w",
                         parameters=WatershedParameters(offsets=offsets),
                         roi_offset=(0,) * len(shape), shape=shape, block_size=block_size)


def test_band_and_odd_context_follow_the_offsets():
    plan = make_plan((64, 64, 64), (32, 32, 32), WatershedParameters().offsets)
    assert plan.context == (6, 12, 12)
    assert plan.band == (3, 7, 7)  # the band measured in docs/blockwise.md
    assert plan.odd_context == (6, 16, 16)  # one longest offset past the band
    assert plan.ids_per_block == 38 * 46 * 46


def test_a_row_of_blocks_relabels_the_bands_next_to_the_odd_block():
    # blocks of 10 along one axis: 0 even, 1 odd, 2 even; band 3
    owner = band_owner((0,), (30,), (10,), (3,), (3,))
    expected = np.full(30, -1)
    expected[7:10] = 1   # the top of block 0, next to block 1
    expected[20:23] = 1  # the bottom of block 2
    assert owner.tolist() == expected.tolist()


def test_voxels_in_the_bands_of_two_faces_keep_their_even_label():
    # 2 x 2 blocks of 8: (0, 0) is even, (0, 1) and (1, 0) are odd
    owner = band_owner((0, 0), (8, 8), (8, 8), (2, 2), (3, 3))
    right, below = np.ravel_multi_index((0, 1), (2, 2)), np.ravel_multi_index((1, 0), (2, 2))
    assert owner[2, 6] == right and owner[6, 2] == below
    assert owner[6, 6] == -1  # near both faces: neither odd block sees the other's labels
    assert owner[2, 2] == -1  # deep inside
    assert (band_owner((0, 8), (8, 16), (8, 8), (2, 2), (3, 3)) == -1).all()  # an odd block


def test_a_box_gets_the_same_owners_as_the_whole_volume():
    shape, block, band = (30, 40), (10, 12), (3, 5)
    grid = (3, 4)
    whole = band_owner((0, 0), shape, block, grid, band)
    assert np.array_equal(band_owner((7, 11), (23, 35), block, grid, band), whole[7:23, 11:35])


def test_every_voxel_gets_the_owner_its_definition_gives():
    """Voxel by voxel against the definition, on random grids, bands (some wider than half
    a block, so one voxel lies in the bands of both faces of an axis) and boxes."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        ndim = int(rng.integers(1, 4))
        block = tuple(int(n) for n in rng.integers(2, 7, ndim))
        grid = tuple(int(n) for n in rng.integers(1, 4, ndim))
        band = tuple(int(n) for n in rng.integers(0, 5, ndim))
        lo = tuple(int(rng.integers(0, b * g)) for b, g in zip(block, grid))
        hi = tuple(int(rng.integers(a + 1, b * g + 1)) for a, b, g in zip(lo, block, grid))
        expected = np.full(tuple(b - a for a, b in zip(lo, hi)), -1)
        for voxel in np.ndindex(*expected.shape):
            position, faces = [], []
            for axis, (v, a, b, g, w) in enumerate(zip(voxel, lo, block, grid, band)):
                p, within = divmod(v + a, b)
                position.append(p)
                if within < w and p > 0:
                    faces.append((axis, -1))
                if b - 1 - within < w and p < g - 1:
                    faces.append((axis, 1))
            if len(faces) == 1 and sum(position) % 2 == 0:
                axis, step = faces[0]
                position[axis] += step
                expected[voxel] = np.ravel_multi_index(position, grid)
        assert np.array_equal(band_owner(lo, hi, block, grid, band), expected)


def test_band_boxes_are_the_voxels_the_odd_block_owns():
    plan = make_plan((30, 36), (10, 12), [(1, 0), (0, 1), (0, 4)])
    owner = band_owner((0, 0), plan.shape, plan.block_size, plan.grid_shape, plan.band)
    for position in [(0, 1), (1, 0), (1, 2), (2, 1)]:  # the odd blocks
        index = plan.block_index(position)
        covered = np.zeros(plan.shape, bool)
        for _, _, lo, hi in band_boxes(position, plan):
            covered[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
        mine = owner == index
        assert mine.any() and not (mine & ~covered).any()
