"""Whole numbers and voxel grids, as every front (reader, writer, full run) reads them."""

import numpy as np
import pytest

from napari_mutex_watershed.errors import InvalidInputError
from napari_mutex_watershed.regions import region_inside, voxel_grid, whole_numbers


def test_whole_numbers_within_float_rounding():
    assert whole_numbers([4.0, np.float64(8), 3 * 0.1 * 10]) == (4, 8, 3)
    assert whole_numbers([0.5, 1]) is None
    assert whole_numbers(["nm"]) is None
    assert whole_numbers([]) == ()


@pytest.mark.parametrize(("scale", "translate", "grid"), [
    ((4, 4, 4), (8, 0, -4), ((4, 4, 4), (8, 0, -4))),
    ((4.000000000001, 2, 2), (0, 0, 0), ((4, 2, 2), (0, 0, 0))),
    ((4, 4, 4), (10, 0, 0), ((4, 4, 4), (10, 0, 0))),  # not a whole number of voxels
    ((0.5, 1, 1), (0, 0, 0), None),
    ((0, 1, 1), (0, 0, 0), None),
    ((-1, 1, 1), (0, 0, 0), None),
    ((1, 1, 1), (0.5, 0, 0), None),
])
def test_voxel_grid(scale, translate, grid):
    assert voxel_grid(scale, translate) == grid


def test_region_inside_refuses_a_region_outside():
    assert region_inside(None, (4, 5)) == ((0, 0), (4, 5))
    with pytest.raises(InvalidInputError):
        region_inside(((2, 0), (4, 5)), (4, 5))
