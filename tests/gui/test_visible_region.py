"""The visible-region helper: pure numpy (plus napari's layer transforms, no Qt)."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_mutex_watershed.gui.visible_region import (
    NotVisible,
    Region,
    apply_placement,
    placement,
    visible_data_box,
    visible_region,
    visible_world_box,
    world_map,
)


def affine(scale, translate):
    scale, translate = np.asarray(scale, float), np.asarray(translate, float)

    def world_to_data(world):
        world = np.asarray(world, float)[-len(scale):]
        return (world - translate) / scale

    return world_to_data


def region_2d(**overrides):
    kwargs = dict(
        data_shape=(4, 100, 200),
        spatial_axes=(1, 2),
        world_point=(0.0, 50.0, 100.0),
        displayed=(1, 2),
        camera_center=(0.0, 50.0, 100.0),
        zoom=1.0,
        canvas_size=(100, 200),
        world_to_data=affine((1, 1, 1), (0, 0, 0)),
    )
    kwargs.update(overrides)
    return visible_region(**kwargs)


def test_world_box_2d_rows_are_canvas_height():
    low, high = visible_world_box((0, 10, 20), zoom=2, canvas_size=(40, 80), ndisplay=2)
    np.testing.assert_allclose(low, [0, 0])
    np.testing.assert_allclose(high, [20, 40])


def test_world_box_3d_is_a_cube_of_the_larger_extent():
    low, high = visible_world_box((5, 10, 20), zoom=1, canvas_size=(40, 80), ndisplay=3)
    np.testing.assert_allclose(high - low, [80, 80, 80])
    np.testing.assert_allclose((high + low) / 2, [5, 10, 20])


def test_whole_image_in_view():
    region = region_2d(max_size=1024)
    assert region.start == (0, 0) and region.stop == (100, 200)
    assert region.shown_start == region.start and region.shown_stop == region.stop


def test_zoomed_in_counts_partly_visible_pixels():
    # world box y in [40, 60], x in [85, 115]: pixel i covers [i - .5, i + .5]
    region = region_2d(zoom=2.0, canvas_size=(40, 60), max_size=1024)
    assert region.start == (40, 85)
    assert region.stop == (61, 116)


def test_view_clipped_to_data():
    region = region_2d(camera_center=(0, 0, 0), zoom=1.0, canvas_size=(50, 50), max_size=1024)
    assert region.start == (0, 0) and region.stop == (26, 26)


def test_view_missing_the_layer():
    with pytest.raises(NotVisible):
        region_2d(camera_center=(0, -500, -500), canvas_size=(50, 50))


def test_3d_data_in_2d_view_gets_context_slices_and_shows_the_current_one():
    region = visible_region(
        data_shape=(6, 30, 100, 200),
        spatial_axes=(1, 2, 3),
        world_point=(0, 10.4, 50, 100),
        displayed=(2, 3),
        camera_center=(10.4, 50, 100),
        zoom=1,
        canvas_size=(100, 200),
        world_to_data=affine((1, 1, 1, 1), (0, 0, 0, 0)),
        context=3,
        max_size=1024,
    )
    assert region.start == (7, 0, 0) and region.stop == (14, 100, 200)
    assert region.shown_start == (10, 0, 0) and region.shown_stop == (11, 100, 200)
    assert region.shown_in_crop == (slice(3, 4), slice(0, 100), slice(0, 200))


def test_context_clipped_at_the_first_slice():
    region = visible_region(
        data_shape=(6, 30, 100, 200), spatial_axes=(1, 2, 3),
        world_point=(0, 1, 50, 100), displayed=(2, 3), camera_center=(1, 50, 100),
        zoom=1, canvas_size=(100, 200), world_to_data=affine((1,) * 4, (0,) * 4),
        context=3, max_size=1024,
    )
    assert region.start[0] == 0 and region.stop[0] == 5
    assert region.shown_in_crop[0] == slice(1, 2)


def test_slice_outside_the_data():
    with pytest.raises(NotVisible):
        visible_region(
            data_shape=(6, 30, 100, 200), spatial_axes=(1, 2, 3),
            world_point=(0, 40, 50, 100), displayed=(2, 3), camera_center=(40, 50, 100),
            zoom=1, canvas_size=(100, 200), world_to_data=affine((1,) * 4, (0,) * 4),
        )


def test_scale_and_translate():
    # voxels of 4 x 2 x 2 world units, data starts at world (100, 10, 20)
    w2d = affine((1, 4, 2, 2), (0, 100, 10, 20))
    region = visible_region(
        data_shape=(6, 30, 100, 200), spatial_axes=(1, 2, 3),
        world_point=(0, 100 + 4 * 12, 0, 0), displayed=(2, 3),
        camera_center=(0, 10 + 2 * 50, 20 + 2 * 60),  # data (50, 60)
        zoom=1.0, canvas_size=(40, 80),  # world 40 x 80 = data 20 x 40
        world_to_data=w2d, context=0, max_size=1024,
    )
    assert region.shown_start[0] == 12
    assert region.start[1:] == (40, 40) and region.stop[1:] == (61, 81)
    layer = Image(np.zeros((6, 30, 100, 200), np.float32), scale=(1, 4, 2, 2),
                  translate=(0, 100, 10, 20))
    placed = placement(layer, region.shown_start)
    assert placed["scale"] == (4, 2, 2)
    assert placed["translate"] == (100 + 4 * 12, 10 + 2 * 40, 20 + 2 * 40)


@pytest.mark.parametrize("transform", [
    {"rotate": 30}, {"shear": [0, 0, 0, 0.5, 0.2, 0.1]},
    {"shear": np.eye(4) + np.diag([0, 0, 0.5], k=-1)},  # lower-triangular: kept whole
    {"affine": np.diag([1, 1.5, 1, 1, 1]) + np.eye(5, k=1) * [0, 0, 0.3, 7, 0]},
], ids=["rotate", "shear", "lower shear", "affine"])
def test_a_result_sits_on_its_voxels_whatever_the_layer_s_transform(transform):
    """Results took only scale and translate: on a rotated, sheared or affine layer they
    sat elsewhere (voxel (10, 20) of a sheared layer at world (10, 20), not (20, 20))."""
    affinities = Image(np.zeros((6, 30, 100, 200), np.float32), scale=(1, 4, 2, 2),
                       translate=(0, 100, 10, 20), **transform)
    origin = (12, 40, 40)
    result = Labels(np.zeros((5, 20, 30), np.uint32), **placement(affinities, origin))
    for voxel in [(0, 0, 0), (4, 19, 29), (2, 7, 3)]:
        np.testing.assert_allclose(
            result.data_to_world(voxel),
            affinities.data_to_world((0, *np.add(voxel, origin)))[1:], atol=1e-9)
    moved = Labels(np.zeros((5, 20, 30), np.uint32))  # placed later, as the preview's
    apply_placement(moved, placement(affinities, origin))
    np.testing.assert_allclose(moved.data_to_world((2, 7, 3)), result.data_to_world((2, 7, 3)))


@pytest.mark.parametrize("transform", [
    {}, {"rotate": 30}, {"shear": [0, 0, 0, 0.5, 0.2, 0.1]},
    {"shear": np.eye(4) + np.diag([0, 0, 0.5], k=-1)},
    {"affine": np.diag([1, 1.5, 1, 1, 1]) + np.eye(5, k=1) * [0, 0, 0.3, 7, 0]},
], ids=["scale and translate", "rotate", "shear", "lower shear", "affine"])
def test_a_bad_value_s_world_position_is_where_napari_puts_its_voxel(transform):
    """Messages gave index times scale plus translate: on a rotated, sheared or affine layer
    not where the layer (and the result layers) put that voxel."""
    from napari_mutex_watershed.errors import InvalidValuesError, with_world_position

    layer = Image(np.zeros((6, 30, 100, 200), np.float32), scale=(1, 4, 2, 2),
                  translate=(0, 100, 10, 20), **transform)
    error = InvalidValuesError("affinities contain 1 NaN", 2, (1, 2, 3)).at((11, 38, 57))
    placed = str(error.at((0, 0, 0), *world_map(placement(layer))))
    world = layer.data_to_world((0, 12, 40, 60))[1:]
    expected = "world position (" + ", ".join(f"{v:g}" for v in world) + ")"
    assert expected in placed, placed
    assert expected in with_world_position(str(error), *world_map(placement(layer)))


def test_a_transform_mixing_channels_with_space_cannot_be_followed():
    mixed = Image(np.zeros((6, 30, 100, 200), np.float32), name="affs",
                  shear=[0.5, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="'affs' has a transform that mixes its channel axis"):
        placement(mixed, (0, 0, 0))


def test_flipped_axis_gives_the_same_box():
    region = region_2d(world_to_data=lambda w: np.array([w[0], w[1], 200 - 1 - w[2]]),
                       zoom=2, canvas_size=(40, 60), camera_center=(0, 50, 100.5),
                       max_size=1024)
    # x in world [85.5, 115.5] -> data [83.5, 113.5]
    assert region.start[1] == 84 and region.stop[1] == 114


def test_3d_view_capped_and_centred():
    region = visible_region(
        data_shape=(3, 300, 300, 300), spatial_axes=(1, 2, 3),
        world_point=(0, 150, 150, 150), displayed=(1, 2, 3),
        camera_center=(100, 150, 200), zoom=0.5, canvas_size=(600, 800),
        world_to_data=affine((1,) * 4, (0,) * 4), max_size=96,
    )
    assert region.shape == (96, 96, 96)
    assert region.start == (52, 102, 152)
    assert region.shown_start == region.start and region.shown_stop == region.stop


def test_3d_cap_stays_inside_the_data():
    region = visible_region(
        data_shape=(3, 300, 300, 300), spatial_axes=(1, 2, 3),
        world_point=(0, 0, 0, 0), displayed=(1, 2, 3),
        camera_center=(2, 150, 299), zoom=0.5, canvas_size=(600, 800),
        world_to_data=affine((1,) * 4, (0,) * 4), max_size=96,
    )
    assert region.start == (0, 102, 204) and region.stop == (96, 198, 300)


def test_layer_with_fewer_axes_than_the_world():
    # world (t, c, y, x) of another layer; a (C, Y, X) layer aligns with the last three
    region = visible_region(
        data_shape=(4, 100, 200), spatial_axes=(1, 2),
        world_point=(3, 0, 50, 100), displayed=(2, 3), camera_center=(0, 50, 100),
        zoom=1, canvas_size=(100, 200), world_to_data=affine((1,) * 3, (0,) * 3),
        max_size=1024,
    )
    assert region.stop == (100, 200)


def test_channel_axis_displayed_is_an_error():
    with pytest.raises(ValueError, match="channel axis"):
        region_2d(displayed=(0, 2))


def test_region_properties():
    region = Region((1, 2), (4, 10), (2, 2), (3, 10))
    assert region.shape == (3, 8) and region.size == 24
    assert region.slices == (slice(1, 4), slice(2, 10))
    assert region.shown_shape == (1, 8)


def test_with_a_real_napari_layer_transform():
    from napari.layers import Image

    layer = Image(np.zeros((6, 30, 100, 200), np.float32), scale=(1, 4, 0.5, 0.5),
                  translate=(0, -20, 5, 7))
    low, high = visible_data_box(
        (0, -20 + 4 * 9, 0, 0), (2, 3), np.array([5.0, 7.0]), np.array([15.0, 27.0]),
        layer.world_to_data,
    )
    np.testing.assert_allclose(low, [0, 9, 0, 0])
    np.testing.assert_allclose(high, [0, 9, 20, 40])
    region = visible_region(
        data_shape=layer.data.shape, spatial_axes=(1, 2, 3),
        world_point=(0, -20 + 4 * 9, 10, 17), displayed=(2, 3),
        camera_center=(0, 10, 17), zoom=4.0, canvas_size=(40, 80),
        world_to_data=layer.world_to_data, context=2, max_size=1024,
    )
    assert region.shown_start == (9, 0, 0)
    assert region.start == (7, 0, 0) and region.stop == (12, 21, 41)
