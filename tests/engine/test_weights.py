"""From affinities to kernel weights: slicing, checks, bias, scaling, smoothing, masks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.engine import check_affinities, edge_slices, edge_weights
from napari_mutex_watershed.engine.weights import nearest_neighbour_mean
from napari_mutex_watershed.errors import InvalidInputError, InvalidValuesError

OFFSETS_2D = [(1, 0), (0, 1), (0, 3)]


def params(**kwargs) -> WatershedParameters:
    return WatershedParameters(offsets=kwargs.pop("offsets", OFFSETS_2D), **kwargs)


def ramp(shape=(3, 6, 7), dtype=np.float32) -> np.ndarray:
    return (np.arange(np.prod(shape)).reshape(shape) / np.prod(shape)).astype(dtype)


@pytest.mark.parametrize(
    "offset", [(1, 0), (0, 1), (0, 3), (-2, 0), (2, -3), (0, 9), (1, 1, 0), (-1, 0, 4)]
)
def test_edge_slices_pair_p_with_p_plus_offset(offset):
    shape = (5, 7) if len(offset) == 2 else (3, 5, 7)
    index = np.arange(np.prod(shape)).reshape(shape)
    source, target = edge_slices(offset, shape)
    sources, targets = index[source].ravel(), index[target].ravel()
    expected = [
        (np.ravel_multi_index(p, shape), np.ravel_multi_index(q, shape))
        for p in np.ndindex(shape)
        for q in [tuple(a + o for a, o in zip(p, offset))]
        if all(0 <= v < n for v, n in zip(q, shape))
    ]
    assert sorted(zip(sources.tolist(), targets.tolist())) == sorted(expected)


def test_check_affinities_returns_channels():
    affs = ramp((3, 6, 7))
    assert check_affinities(affs, params()) == [0, 1, 2]
    assert check_affinities(ramp((5, 6, 7)), params(channels=[4, 0, 2])) == [4, 0, 2]


def test_check_affinities_suggests_layout():
    with pytest.raises(InvalidInputError, match=r"expected \(channels, z, y, x\)"):
        check_affinities(ramp((6, 7)), params(offsets=[(1, 0, 0), (0, 1, 0), (0, 0, 1)]))


def test_weights_are_float64_affinity_minus_bias():
    affs = ramp()
    weights, nn_mean = edge_weights(affs, params(bias_short=0.4, bias_long=0.8))
    assert weights.dtype == np.float64 and weights.shape == affs.shape
    assert nn_mean is None
    expected = affs.astype(np.float64) - np.array([0.4, 0.4, 0.8])[:, None, None]
    np.testing.assert_array_equal(weights, expected)


def test_uint8_is_scaled_to_unit_range():
    affs = np.array([0, 51, 128, 255], np.uint8).reshape(1, 1, 4).repeat(3, axis=0)
    weights, _ = edge_weights(affs, params(bias=0.0))
    np.testing.assert_allclose(weights[0, 0], [0, 0.2, 128 / 255, 1.0])


def test_nan_is_caught_before_the_kernel():
    affs = ramp()
    affs[1, 2, 3] = np.nan
    with pytest.raises(InvalidInputError, match=r"1 NaN and 0 infinite values in channel 1, "
                                                r"first at voxel \(2, 3\)"):
        edge_weights(affs, params())


@pytest.mark.parametrize("value, problem", [(np.inf, "0 NaN and 1 infinite"),
                                            (1.5, "1 values outside 0..1 \\(from 0 to 1.5\\)"),
                                            (-0.25, "outside 0..1 \\(from -0.25 to")])
def test_values_outside_probabilities_are_refused_at_their_voxel(value, problem):
    affs = ramp()
    affs[0, 1, 2] = value
    with pytest.raises(InvalidValuesError, match=problem + r".* in channel 0, first at voxel "
                                                 r"\(1, 2\)") as caught:
        edge_weights(affs, params())
    assert caught.value.at((100, 200)).voxel == (1, 2)
    assert "first at voxel (101, 202)" in str(caught.value.at((100, 200)))


def test_invert_uses_one_minus_value():
    affs = ramp()
    inverted, _ = edge_weights(1.0 - affs.astype(np.float64), params(invert=True, bias=0.3))
    plain, _ = edge_weights(affs.astype(np.float64), params(bias=0.3))
    np.testing.assert_allclose(inverted, plain, atol=1e-12)


def test_sigma_smooths_each_channel_like_gaussian_filter():
    rng = np.random.default_rng(0)
    affs = rng.random((3, 20, 22)).astype(np.float32)
    weights, _ = edge_weights(affs, params(sigma=1.5, bias=0.5))
    for channel, smoothed in zip(affs, weights):
        expected = ndimage.gaussian_filter(channel.astype(np.float64), 1.5, mode="nearest") - 0.5
        np.testing.assert_allclose(smoothed, expected, atol=1e-12)


def test_channels_are_taken_in_the_given_order():
    affs = ramp((4, 6, 7))
    weights, _ = edge_weights(affs, params(channels=[3, 1, 0], bias=0.0))
    np.testing.assert_array_equal(weights, affs[[3, 1, 0]].astype(np.float64))


def test_input_is_not_modified():
    affs = ramp()
    before = affs.copy()
    edge_weights(affs, params(sigma=1.0, invert=True), mask=np.ones(affs.shape[1:], bool))
    np.testing.assert_array_equal(affs, before)


def test_mask_removes_edges_touching_or_jumping_over_outside():
    affs = np.full((3, 4, 10), 0.9, np.float32)
    affs[2] = 0.1  # long-range edges repel, except one that attracts
    affs[2, 1, 2] = 0.9  # (1, 2) -> (1, 5) jumps over (1, 3) and (1, 4)
    mask = np.ones((4, 10), bool)
    mask[:, 4] = False
    weights, _ = edge_weights(affs, params(bias=0.5), mask=mask)
    assert (weights[:, :, 4] == 0).all(), "edges starting outside are gone"
    assert (weights[1, :, 3] == 0).all(), "edges (p, p + (0, 1)) ending outside are gone"
    assert (weights[1, :, 5] > 0).all(), "edges right of the hole stay"
    assert weights[2, 1, 2] == 0, "an attractive long edge over the hole is gone"
    np.testing.assert_allclose(weights[2, 1, 6], 0.1 - 0.5)  # (1, 6) -> (1, 9): no hole
    np.testing.assert_allclose(weights[2, 0, 2], 0.1 - 0.5)  # repulsion over the hole stays
    assert weights[2, 0, 1] == 0, "(0, 1) -> (0, 4) ends outside"
    inside = weights[0][:, mask[0]]
    np.testing.assert_allclose(inside[:-1], 0.4)  # vertical edges inside the mask untouched


def test_mask_on_negative_offsets():
    affs = np.full((2, 1, 8), 0.9, np.float32)
    mask = np.ones((1, 8), bool)
    mask[0, 3] = False
    weights, _ = edge_weights(affs, params(offsets=[(0, -1), (0, -4)], bias=0.5), mask=mask)
    # (0, -1): p -> p - 1; the edge from 4 ends at 3 (outside)
    assert weights[0, 0, 4] == 0 and weights[0, 0, 3] == 0 and weights[0, 0, 5] > 0
    # (0, -4): 5 -> 1 and 6 -> 2 jump over 3; 7 -> 3 ends there; 4 -> 0 passes 3
    assert (weights[1, 0, 4:8] == 0).all()


def test_randomized_strides_drop_long_edges_with_seeded_rng():
    affs = np.full((3, 60, 60), 0.9, np.float32)
    p = params(bias=0.5, strides=[2, 3], randomized_strides=True, seed=5)
    first, _ = edge_weights(affs, p)
    again, _ = edge_weights(affs, p)
    other, _ = edge_weights(affs, p, random_state=6)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert (first[:2] > 0).all(), "nearest-neighbour edges are all kept"
    kept = (first[2] != 0).mean()
    assert abs(kept - 1 / 6) < 0.02


def test_nearest_neighbour_mean_counts_edges_touching_each_voxel():
    affs = np.zeros((3, 2, 3), np.float32)
    affs[0] = [[0.2, 0.4, 0.6], [9, 9, 9]]  # (1, 0): row 1 edges are out of bounds
    affs[1] = [[0.1, 0.3, 9], [0.5, 0.7, 9]]  # (0, 1): column 2 edges are out of bounds
    affs[2] = 0.99  # long range: not counted
    mean = nearest_neighbour_mean(affs.astype(np.float64), params())
    expected = np.array([
        [np.mean([0.2, 0.1]), np.mean([0.4, 0.3, 0.1]), np.mean([0.6, 0.3])],
        [np.mean([0.2, 0.5]), np.mean([0.4, 0.7, 0.5]), np.mean([0.6, 0.7])],
    ])
    np.testing.assert_allclose(mean, expected, rtol=1e-6)


def test_nn_mean_is_returned_on_request_before_bias():
    affs = ramp()
    _, nn_mean = edge_weights(affs, params(bias=0.9), keep_nn_mean=True)
    assert nn_mean is not None and nn_mean.shape == affs.shape[1:]
    np.testing.assert_allclose(nn_mean, nearest_neighbour_mean(affs.astype(np.float64),
                                                               params()), rtol=1e-6)
