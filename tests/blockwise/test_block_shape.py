"""The block shape chosen from the region: a worker's box never over the budget, the least
kernel work among the grids that fit, the measured default where it fits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import zarr

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.blockwise.block_shape import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_BOX_VOXELS,
    WHOLE_REGION_VOXELS,
    block_size_for,
    default_block_size,
    odd_halo,
)
from napari_mutex_watershed.blockwise.launch import plan_run, validate_request
from napari_mutex_watershed.blockwise.odd_order import odd_kernel_box
from napari_mutex_watershed.errors import OutputExistsError
from napari_mutex_watershed.storage import create_array

PARAMS = WatershedParameters()
HALO = odd_halo(PARAMS)  # (6, 16, 16)
REGIONS = [(256, 256, 256), (512, 256, 256), (512, 512, 512), (1024, 512, 512),
           (1024, 1024, 1024), (300, 300, 300), (128, 512, 512), (100, 2000, 2000),
           (16, 1024, 1024), (65, 129, 129)]


def boxes_along(size: int, core: int, halo: int) -> list[int]:
    """Each block's kernel box along one axis: its core grown by the halo, cut at the ends."""
    return [min(size, lo + core + halo) - max(0, lo - halo) for lo in range(0, size, core)]


def largest_box(shape, block, halo) -> int:
    return int(np.prod([max(boxes_along(s, b, h)) for s, b, h in zip(shape, block, halo)]))


def kernel_work(shape, block, halo) -> int:
    """The voxels of all the blocks' kernel boxes."""
    return int(np.prod([sum(boxes_along(s, b, h)) for s, b, h in zip(shape, block, halo)]))


def test_the_measured_default_where_it_fits():
    assert HALO == (6, 16, 16)
    assert default_block_size((256, 256, 256), HALO) == DEFAULT_BLOCK_SIZE[3]
    assert default_block_size((512, 256, 256), HALO) == DEFAULT_BLOCK_SIZE[3]


@pytest.mark.parametrize("shape", REGIONS)
def test_no_kernel_box_over_the_budget(shape):
    block = default_block_size(shape, HALO)
    assert all(b <= d for b, d in zip(block, DEFAULT_BLOCK_SIZE[3]))
    assert largest_box(shape, block, HALO) <= DEFAULT_BOX_VOXELS[3]


def test_a_worker_holds_no_more_as_the_volume_doubles():
    # the fixed block at 512^3 has interior boxes of 76 x 160 x 160, 23 % more than at 256^3
    assert largest_box((512,) * 3, DEFAULT_BLOCK_SIZE[3], HALO) > DEFAULT_BOX_VOXELS[3]
    at_256 = largest_box((256,) * 3, default_block_size((256,) * 3, HALO), HALO)
    for shape in [(512, 256, 256), (512, 512, 512), (1024, 512, 512), (1024, 1024, 1024)]:
        assert largest_box(shape, default_block_size(shape, HALO), HALO) <= at_256


@pytest.mark.parametrize("shape", [(512, 512, 512), (300, 300, 300), (128, 512, 512),
                                   (96, 200, 200)])
def test_least_work_of_every_block_that_fits(shape):
    """Against every block shape up to the default, one axis at a time (the largest box
    and the work are products over the axes)."""
    boxes, works = [], []
    for size, largest, halo in zip(shape, DEFAULT_BLOCK_SIZE[3], HALO):
        along = [boxes_along(size, core, halo) for core in range(halo + 1, largest + 1)]
        boxes.append(np.array([max(b) for b in along], float))
        works.append(np.array([sum(b) for b in along], float))
    box = np.multiply.outer(np.multiply.outer(*boxes[:2]), boxes[2])
    work = np.multiply.outer(np.multiply.outer(*works[:2]), works[2])
    least = work[box <= DEFAULT_BOX_VOXELS[3]].min()
    assert kernel_work(shape, default_block_size(shape, HALO), HALO) == least


def test_the_box_is_what_the_odd_blocks_read(tmp_path):
    """The box counted here is the one an odd block's kernel sees (``odd_kernel_box``)."""
    shape = (512, 512, 512)
    create_array(tmp_path / "big.zarr/affinities", "affinities", (6, *shape), np.uint8,
                 ["c^", "z", "y", "x"],
                 attributes={"offsets": [list(o) for o in PARAMS.offsets]})
    plan, _ = validate_request(tmp_path / "big.zarr/affinities", tmp_path / "o.zarr/labels", PARAMS)
    assert plan.block_size == default_block_size(shape, HALO) != DEFAULT_BLOCK_SIZE[3]
    positions = itertools.product(*[range(n) for n in plan.grid_shape])
    seen = max(np.prod(np.subtract(*odd_kernel_box(plan, p)[::-1])) for p in positions)
    assert seen == largest_box(shape, plan.block_size, HALO) <= DEFAULT_BOX_VOXELS[3]


def test_offsets_too_long_for_the_budget_keep_the_largest_block():
    long_halo = (6, 200, 200)
    assert default_block_size((512, 1024, 1024), long_halo) == DEFAULT_BLOCK_SIZE[3]


def test_given_small_and_2d():
    assert block_size_for((512,) * 3, PARAMS, (32, 600, 64)) == (32, 512, 64)
    small = (64, 256, 256)
    assert np.prod(small) <= WHOLE_REGION_VOXELS
    assert block_size_for(small, PARAMS) == small
    params_2d = WatershedParameters(offsets=[(1, 0), (0, 1), (9, 0), (0, 9)])
    assert block_size_for((4096, 4096), params_2d) == DEFAULT_BLOCK_SIZE[2]  # interior fits
    assert largest_box((4096, 4096), DEFAULT_BLOCK_SIZE[2], odd_halo(params_2d)) \
        <= DEFAULT_BOX_VOXELS[2]


def test_without_a_block_size_a_run_of_the_same_settings_keeps_its_block(tmp_path):
    """The same command resumes (or finds complete) a run whose block was given, or chosen
    by an earlier version; other settings are still another run's output."""
    shape = (512, 512, 512)
    create_array(tmp_path / "big.zarr/affinities", "affinities", (6, *shape), np.uint8,
                 ["c^", "z", "y", "x"],
                 attributes={"offsets": [list(o) for o in PARAMS.offsets]})
    source, output = tmp_path / "big.zarr/affinities", tmp_path / "o.zarr/labels"
    earlier = plan_run(source, output, PARAMS, block_size=DEFAULT_BLOCK_SIZE[3])
    zarr.open_array(earlier.output_path, mode="r+")[:64, :128, :128] = 1  # its first block
    again = plan_run(source, output, PARAMS)
    assert again.block_size == earlier.block_size == DEFAULT_BLOCK_SIZE[3]
    assert again.identity() == earlier.identity()
    with pytest.raises(OutputExistsError, match="already exists"):  # a block asked for
        plan_run(source, output, PARAMS, block_size=(32, 64, 64))
    other = PARAMS.model_copy(update={"bias_long": 0.8})
    with pytest.raises(OutputExistsError, match="already exists"):
        plan_run(source, output, other)
