"""segment(): each parameter's effect on real results, masks, seeds, bad input, corner cases."""

from __future__ import annotations

import time
import warnings

import mwatershed
import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import adapted_rand_error

from napari_mutex_watershed import WatershedParameters, segment
from napari_mutex_watershed.engine import run_kernel
from napari_mutex_watershed.errors import InvalidInputError, KernelError
from napari_mutex_watershed.synthetic import affinities_from_labels


def are(truth: np.ndarray, test: np.ndarray) -> float:
    return float(adapted_rand_error(truth, test)[0])


def n_segments(labels: np.ndarray) -> int:
    return int(np.count_nonzero(np.unique(labels)))


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b are the same segmentation up to renaming ids (0 stays 0)."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def with_params(base: WatershedParameters, **update) -> WatershedParameters:
    return WatershedParameters(**{**base.model_dump(), **update})


# --------------------------------------------------------------------------- output format


def test_output_is_consecutive_uint32_with_background(sample_3d, segmented_3d):
    affs, _, _ = sample_3d
    labels = segmented_3d
    assert labels.dtype == np.uint32
    assert labels.shape == affs.shape[1:]
    ids = np.unique(labels)
    assert ids[0] == 0, "membrane voxels without an attractive edge are background"
    assert np.array_equal(ids[1:], np.arange(1, len(ids)))


def test_default_parameters_recover_the_sample_cells(sample_3d, segmented_3d):
    _, truth, _ = sample_3d
    assert are(truth, segmented_3d) < 0.15


def test_deterministic(sample_3d, params_3d, segmented_3d):
    again = segment(sample_3d[0], params_3d)
    assert np.array_equal(again, segmented_3d)


def test_timings_say_where_the_time_went(sample_3d, params_3d, segmented_3d):
    timings = {}
    started = time.perf_counter()
    labels = segment(sample_3d[0], params_3d, timings=timings)
    elapsed = time.perf_counter() - started
    assert np.array_equal(labels, segmented_3d)
    assert set(timings) == {"weights", "kernel", "finalize"}
    assert all(seconds > 0 for seconds in timings.values())
    assert sum(timings.values()) <= elapsed


def test_default_parameters_object_is_optional(sample_3d, segmented_3d):
    # the sample uses the default 3D offsets, so no parameters gives the same result
    assert np.array_equal(segment(sample_3d[0]), segmented_3d)


def test_two_dimensional(sample_2d, params_2d):
    affs, truth, _ = sample_2d
    labels = segment(affs, params_2d)
    assert labels.shape == truth.shape and labels.dtype == np.uint32
    assert are(truth, labels) < 0.15
    assert n_segments(labels) >= truth.max()


def test_all_zero_affinities_give_background(params_3d):
    labels = segment(np.zeros((6, 8, 10, 12), np.float32), params_3d)
    assert labels.shape == (8, 10, 12) and labels.dtype == np.uint32
    assert not labels.any()


# --------------------------------------------------------------------------- parameters


def test_more_bias_more_segments(sample_3d):
    affs, _, offsets = sample_3d
    # min_size 0: the size filter would hide the fragments more bias makes
    uniform = [n_segments(segment(affs, WatershedParameters(offsets=offsets, bias=b, min_size=0)))
               for b in (0.2, 0.35, 0.5, 0.6)]
    assert all(a < b for a, b in zip(uniform, uniform[1:])), uniform
    short = [
        n_segments(segment(affs, WatershedParameters(offsets=offsets, bias_short=b, min_size=0)))
        for b in (0.2, 0.3, 0.4, 0.5)
    ]
    assert all(a < b for a, b in zip(short, short[1:])), short


def test_bias_list_equals_short_long_split(sample_3d, params_3d, segmented_3d):
    per_offset = params_3d.biases().tolist()
    labels = segment(sample_3d[0], with_params(params_3d, bias=per_offset))
    assert np.array_equal(labels, segmented_3d)


def test_min_size_removes_small_segments(sample_3d, params_3d, segmented_3d):
    sizes = np.bincount(segmented_3d.ravel())[1:]
    min_size = 50
    assert (sizes < min_size).any(), "the test needs small segments to remove"
    labels = segment(sample_3d[0], with_params(params_3d, min_size=min_size))
    kept = np.bincount(labels.ravel())[1:]
    assert kept.min() >= min_size
    assert len(kept) == int((sizes >= min_size).sum())
    # what survives is unchanged; removed voxels become background
    big = np.isin(segmented_3d, np.flatnonzero(sizes >= min_size) + 1)
    assert np.array_equal(labels > 0, big)
    assert same_partition(labels[big], segmented_3d[big])


def _stripes():
    """Three 4-voxel-wide stripes with distinct inner affinities, walls of 0.05."""
    truth = np.repeat(np.array([1, 2, 3]), 4)[None, :].repeat(10, axis=0)  # (10, 12)
    inner = {1: 0.95, 2: 0.75, 3: 0.6}
    offsets = [(1, 0), (0, 1)]
    affs = np.zeros((2,) + truth.shape, np.float32)
    for channel, offset in zip(affs, offsets):
        for (y, x), label in np.ndenumerate(truth):
            ty, tx = y + offset[0], x + offset[1]
            if ty < truth.shape[0] and tx < truth.shape[1]:
                channel[y, x] = inner[label] if truth[ty, tx] == label else 0.05
    return affs, truth, offsets


def _reference_nn_means(affs, truth, offsets):
    """Mean over each segment's voxels of the mean affinity of the voxel's in-bounds
    nearest-neighbour edges (outgoing and incoming), by brute force."""
    per_voxel = {}
    for (y, x) in np.ndindex(truth.shape):
        values = []
        for channel, (dy, dx) in zip(affs, offsets):
            if y + dy < truth.shape[0] and x + dx < truth.shape[1]:
                values.append(channel[y, x])  # outgoing
            if y - dy >= 0 and x - dx >= 0:
                values.append(channel[y - dy, x - dx])  # incoming
        per_voxel[y, x] = np.mean(values)
    return {
        label: float(np.mean([per_voxel[p] for p in zip(*np.nonzero(truth == label))]))
        for label in np.unique(truth)
    }


def test_threshold_removes_segments_with_low_mean_affinity_exactly():
    affs, truth, offsets = _stripes()
    params = WatershedParameters(offsets=offsets, bias=0.5)
    plain = segment(affs, params)
    assert same_partition(plain, truth), "the stripes are the segments"
    means = _reference_nn_means(affs, truth, offsets)
    assert means[1] > means[2] > means[3]
    for cut in (means[3], means[2], means[1]):
        for threshold, expect_kept in (
            (cut - 1e-4, [label for label in means if means[label] >= cut - 1e-4]),
            (cut + 1e-4, [label for label in means if means[label] >= cut + 1e-4]),
        ):
            labels = segment(affs, with_params(params, threshold=threshold))
            kept = np.isin(truth, expect_kept)
            assert np.array_equal(labels > 0, kept), (threshold, means)
            assert same_partition(labels[kept], truth[kept])
            assert labels.max() == len(expect_kept)  # still consecutive


def test_threshold_on_sample_removes_low_affinity_segments(sample_3d, params_3d, segmented_3d):
    labels = segment(sample_3d[0], with_params(params_3d, threshold=0.5))
    assert 0 < n_segments(labels) < n_segments(segmented_3d)
    assert np.array_equal(labels > 0, (labels > 0) & (segmented_3d > 0))


def test_sigma_changes_result_on_noisy_input(noisy_3d):
    affs, truth, offsets = noisy_3d
    params = WatershedParameters(offsets=offsets)
    plain = segment(affs, params)
    smoothed = segment(affs, with_params(params, sigma=0.5))
    assert not np.array_equal(plain, smoothed)
    # smoothing averages the noise away: measured 0.55 -> 0.14 adapted Rand error
    assert are(truth, smoothed) < are(truth, plain) / 2


def test_invert_on_boundaries_equals_plain_run(sample_3d, params_3d, segmented_3d):
    boundaries = 1.0 - sample_3d[0]
    labels = segment(boundaries, with_params(params_3d, invert=True))
    assert np.array_equal(labels, segmented_3d)


def test_uint8_and_float32_agree(sample_3d, params_3d, segmented_3d):
    as_uint8 = np.round(sample_3d[0] * 255).astype(np.uint8)
    labels = segment(as_uint8, params_3d)
    assert labels.dtype == np.uint32
    assert are(segmented_3d, labels) < 0.01


def test_float64_equals_float32(sample_3d, params_3d, segmented_3d):
    labels = segment(sample_3d[0].astype(np.float64), params_3d)
    assert np.array_equal(labels, segmented_3d)


def test_regular_strides_change_result_and_are_reproducible(sample_3d, params_3d, segmented_3d):
    params = with_params(params_3d, strides=[1, 3, 3])
    first = segment(sample_3d[0], params)
    assert np.array_equal(first, segment(sample_3d[0], params))
    assert not np.array_equal(first, segmented_3d)


def test_randomized_strides_reproducible_with_seed(sample_3d, params_3d):
    params = with_params(params_3d, strides=[1, 3, 3], randomized_strides=True, seed=1)
    first = segment(sample_3d[0], params)
    again = segment(sample_3d[0], params)
    other = segment(sample_3d[0], with_params(params, seed=2))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_channels_select_from_extra_channels(sample_3d, params_3d, segmented_3d):
    affs = sample_3d[0]
    extra = np.concatenate([np.zeros_like(affs[:1]), affs[::-1]])  # 7 channels, reversed
    params = with_params(params_3d, channels=[6, 5, 4, 3, 2, 1])
    assert np.array_equal(segment(extra, params), segmented_3d)


# --------------------------------------------------------------------------- mask


def test_mask_outside_is_background_and_not_crossed(sample_3d, params_3d, segmented_3d):
    affs, _, _ = sample_3d
    # a slab thinner than the long-range offset (0, 9, 0): long edges jump over it
    mask = np.ones(affs.shape[1:], bool)
    mask[:, 22:26, :] = False
    crossing = np.intersect1d(segmented_3d[:, :22], segmented_3d[:, 26:])
    assert np.count_nonzero(crossing), "unmasked, segments run through the slab"
    labels = segment(affs, params_3d, mask=mask)
    assert not labels[~mask].any()
    both_sides = np.intersect1d(labels[:, :22], labels[:, 26:])
    assert not np.count_nonzero(both_sides), f"segments {both_sides} cross the masked slab"
    ids = np.unique(labels)
    assert np.array_equal(ids, np.arange(len(ids)))


def test_mask_accepts_non_bool(sample_2d, params_2d):
    affs = sample_2d[0]
    mask = np.zeros(affs.shape[1:], np.uint8)
    mask[10:60, 10:60] = 7
    labels = segment(affs, params_2d, mask=mask)
    assert not labels[mask == 0].any() and labels[mask > 0].any()


# --------------------------------------------------------------------------- seeds


def _interior_points(truth: np.ndarray, cells) -> list[tuple[int, ...]]:
    """The voxel of each cell farthest from its boundary."""
    points = []
    for cell in cells:
        distance = ndimage.distance_transform_edt(truth == cell)
        points.append(np.unravel_index(np.argmax(distance), truth.shape))
    return points


def test_seeds_keep_their_ids_and_others_do_not_collide(sample_3d, params_3d):
    affs, truth, _ = sample_3d
    cells = [1, 4, 7]
    seed_ids = [3, 1000, 2**40]  # uint64-only id on purpose
    seeds = np.zeros(truth.shape, np.uint64)
    for point, seed_id in zip(_interior_points(truth, cells), seed_ids):
        seeds[point] = seed_id
    labels = segment(affs, params_3d, seeds=seeds)
    assert labels.dtype == np.uint64  # 2**40 does not fit uint32
    for cell, seed_id in zip(cells, seed_ids):
        region = labels == seed_id
        assert labels[seeds == seed_id].tolist() == [seed_id]
        # the seeded segment is (mostly) its cell, not merged with any other segment
        assert region.sum() > 0.5 * (truth == cell).sum()
        assert np.isin(truth[region], [0, cell]).mean() > 0.99
    others = np.setdiff1d(np.unique(labels), [0] + seed_ids)
    assert others.min() > max(seed_ids)
    assert np.array_equal(others, np.arange(others.min(), others.min() + len(others)))


def test_seed_id_equal_to_a_kernel_label_does_not_merge(sample_2d, params_2d):
    """mwatershed names unseeded segments by a voxel index; a seed with that very id must not
    absorb the unseeded segment."""
    affs, truth, offsets = sample_2d
    weights = affs.astype(np.float64) - params_2d.biases()[:, None, None]
    raw = mwatershed.agglom(weights, [list(o) for o in offsets])
    ids, counts = np.unique(raw, return_counts=True)
    biggest = ids[1:][np.argmax(counts[1:])]
    cell_a = np.bincount(truth[raw == biggest]).argmax()
    cell_b = next(c for c in np.unique(truth) if c not in (0, cell_a))
    seeds = np.zeros(truth.shape, np.uint32)  # uint32 seeds are accepted too
    seeds[_interior_points(truth, [cell_b])[0]] = biggest
    labels = segment(affs, params_2d, seeds=seeds)
    seeded = labels == biggest
    assert not np.isin(cell_a, truth[seeded]), "the seed absorbed another cell's segment"
    assert np.bincount(truth[seeded]).argmax() == cell_b


def test_many_seeds_warn(params_2d):
    rng = np.random.default_rng(0)
    affs = rng.uniform(0, 1, (4, 40, 40)).astype(np.float32)
    ids = rng.permutation(np.arange(1, 1601)) * (rng.random(1600) < 0.7)
    seeds = ids.reshape(40, 40).astype(np.int64)
    n_ids = np.count_nonzero(np.unique(seeds))
    assert n_ids > 1000
    with pytest.warns(UserWarning, match=f"{n_ids} distinct seed ids"):
        labels = segment(affs, params_2d, seeds=seeds)
    assert np.array_equal(labels[seeds > 0], seeds[seeds > 0])


def test_few_seeds_do_not_warn(sample_2d, params_2d):
    seeds = np.zeros(sample_2d[1].shape, np.uint8)
    seeds[5, 5] = 9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = segment(sample_2d[0], params_2d, seeds=seeds)
    assert labels[5, 5] == 9


# --------------------------------------------------------------------------- bad input


def test_nan_says_how_many_and_where(sample_3d, params_3d):
    affs = sample_3d[0].copy()
    affs[2, 3, 4, 5] = np.nan
    affs[2, 10, 0, 0] = np.nan
    affs[2, 11, 1, 1] = np.nan
    with pytest.raises(InvalidInputError) as info:
        segment(affs, params_3d)
    message = str(info.value)
    assert "3 NaN" in message
    assert "channel 2" in message
    assert "(3, 4, 5)" in message


@pytest.mark.parametrize("shape", [(8, 8, 8), (8, 9, 8), (1, 1, 1), (2, 20, 20)])
def test_arrays_shorter_than_an_offset_segment_without_those_offsets(shape):
    """mwatershed panics on an offset as long as the array; such offsets have no edge in it
    (a small preview crop or block), so they are left out."""
    affs = np.random.default_rng(0).random((6, *shape)).astype(np.float32)
    parameters = WatershedParameters()  # offsets up to 9 voxels
    labels = segment(affs, parameters)
    fitting = [i for i, o in enumerate(parameters.offsets)
               if all(abs(v) < n for v, n in zip(o, shape))]
    if fitting:
        alone = segment(affs[fitting], parameters.model_copy(
            update={"offsets": [parameters.offsets[i] for i in fitting]}))
        np.testing.assert_array_equal(labels, alone)
    else:
        assert not labels.any()


def test_inf_is_rejected(sample_2d, params_2d):
    affs = sample_2d[0].copy()
    affs[1, 7, 8] = np.inf
    affs[1, 9, 9] = -np.inf
    message = r"2 infinite values in channel 1, first at voxel \(7, 8\)"
    with pytest.raises(InvalidInputError, match=message):
        segment(affs, params_2d)


def test_channel_count_must_match_offsets(sample_3d, params_3d):
    with pytest.raises(InvalidInputError, match="5 channels but there are 6 offsets"):
        segment(sample_3d[0][:5], params_3d)
    with pytest.raises(InvalidInputError, match="7 channels but there are 6 offsets"):
        segment(np.concatenate([sample_3d[0], sample_3d[0][:1]]), params_3d)


def test_channels_out_of_range(sample_3d, params_3d):
    params = with_params(params_3d, channels=[0, 1, 2, 3, 4, 9])
    with pytest.raises(InvalidInputError, match=r"channels \[9\].*only 6 channels"):
        segment(sample_3d[0], params)


def test_without_offsets_a_2d_array_gets_the_2d_defaults(sample_2d, params_2d):
    affs = sample_2d[0]
    expected = segment(affs, params_2d)  # the sample's offsets are the 2D defaults
    np.testing.assert_array_equal(segment(affs), expected)
    np.testing.assert_array_equal(segment(affs, WatershedParameters(min_size=20)), expected)
    np.testing.assert_array_equal(segment(affs, {"bias": [0.5, 0.5, 0.7, 0.7]}), expected)


def test_2d_offsets_on_3d_array(sample_3d, params_2d):
    with pytest.raises(InvalidInputError, match="offsets are 2D"):
        segment(sample_3d[0][:4], params_2d)


def test_empty_array(params_3d):
    with pytest.raises(InvalidInputError, match="empty"):
        segment(np.zeros((6, 0, 10, 10), np.float32), params_3d)


@pytest.mark.parametrize("dtype", [np.int32, bool, np.float16])
def test_unsupported_dtype(dtype, params_2d):
    affs = np.ones((4, 8, 8), dtype)
    with pytest.raises(InvalidInputError, match=f"dtype {np.dtype(dtype)}.*float32, float64"):
        segment(affs, params_2d)


@pytest.mark.parametrize("dtype", [">f4", ">f8"])
def test_big_endian_floats_are_floats(dtype, sample_2d, params_2d):
    """HDF5 files and zarr v2 arrays may store big-endian floats: the same affinities."""
    affs = sample_2d[0]
    native = np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(segment(affs.astype(dtype), params_2d),
                                  segment(affs.astype(native), params_2d))


def test_mask_of_wrong_shape(sample_2d, params_2d):
    with pytest.raises(InvalidInputError, match=r"mask has shape \(96, 95\), expected \(96, 96\)"):
        segment(sample_2d[0], params_2d, mask=np.ones((96, 95), bool))


def test_seeds_of_wrong_shape(sample_2d, params_2d):
    message = r"seeds have shape \(95, 96\), expected \(96, 96\)"
    with pytest.raises(InvalidInputError, match=message):
        segment(sample_2d[0], params_2d, seeds=np.zeros((95, 96), np.uint64))


def test_negative_seeds(sample_2d, params_2d):
    seeds = np.zeros((96, 96), np.int64)
    seeds[3, 3] = -2
    with pytest.raises(InvalidInputError, match="negative"):
        segment(sample_2d[0], params_2d, seeds=seeds)


def test_float_seeds(sample_2d, params_2d):
    with pytest.raises(InvalidInputError, match="integer"):
        segment(sample_2d[0], params_2d, seeds=np.zeros((96, 96), np.float32))


def test_kernel_panic_becomes_kernel_error(params_2d):
    weights = np.zeros((4, 12, 12))
    weights[0, 3, 3] = np.nan  # bypasses validation: mwatershed panics on NaN
    with pytest.raises(KernelError, match="(?i)nan"):
        run_kernel(weights, params_2d)


def test_errors_are_value_errors():
    # callers that catch ValueError keep working
    assert issubclass(InvalidInputError, ValueError)


# --------------------------------------------------------------------------- corner cases


def test_object_containing_first_voxel_is_not_background():
    truth = np.zeros((6, 6, 6), np.uint32)
    truth[:3, :3, :3] = 1  # voxel 0 is inside an object
    truth[3:, 3:, 3:] = 2
    offsets = [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
    affs = affinities_from_labels(truth, offsets, sigma=0, noise=0)
    labels = segment(affs, WatershedParameters(offsets=offsets))
    assert labels[0, 0, 0] != 0
    assert same_partition(labels, truth)


def test_first_voxel_singleton_is_its_own_segment():
    """Voxel 0 has an attractive edge but a stronger mutex edge keeps it alone: mwatershed then
    labels it 0, as if it were background. It must come out as a segment."""
    offsets = [(0, 1), (0, 2)]
    affs = np.zeros((2, 1, 3), np.float32)
    affs[0, 0, 0] = 0.6  # 0-1 attracts weakly
    affs[0, 0, 1] = 0.9  # 1-2 attracts strongly
    affs[1, 0, 0] = 0.0  # 0-2 repels strongest, before 0-1 is looked at
    params = WatershedParameters(offsets=offsets, bias=0.5, min_size=0)
    raw = mwatershed.agglom(affs.astype(np.float64) - 0.5, [list(o) for o in offsets])
    assert raw[0, 0] == 0 and raw[0, 1] != 0, "the kernel's corner case this test is about"
    labels = segment(affs, params)
    assert same_partition(labels, np.array([[1, 2, 2]]))


def test_first_voxel_restore_honours_strides():
    """Voxels whose only attractive edge is skipped by a stride are background, not part of
    voxel 0's segment."""
    offsets = [(0, 1), (0, 2)]
    affs = np.zeros((2, 1, 6), np.float32)
    affs[0, 0, :2] = [0.6, 0.9]  # 0-1 weak, 1-2 strong
    affs[1, 0, 0] = 0.0  # mutex 0-2 (kept by the stride)
    affs[1, 0, 3] = 0.9  # 3-5 attracts, but position 3 is skipped with stride 2
    params = WatershedParameters(offsets=offsets, bias=0.5, strides=[1, 2], min_size=0)
    labels = segment(affs, params)
    assert same_partition(labels, np.array([[1, 2, 2, 0, 0, 0]]))


def test_first_voxel_singleton_with_seeds_elsewhere():
    offsets = [(0, 1), (0, 2)]
    affs = np.zeros((2, 1, 3), np.float32)
    affs[0, 0, :2] = [0.6, 0.9]
    seeds = np.array([[0, 0, 4]], np.uint64)
    labels = segment(affs, WatershedParameters(offsets=offsets, bias=0.5, min_size=0),
                     seeds=seeds)
    assert labels.tolist() == [[5, 4, 4]]


def test_seed_ids_near_uint64_max_are_refused():
    seeds = np.zeros((4, 4), np.uint64)
    seeds[0, 0] = np.iinfo(np.uint64).max - 3
    with pytest.raises(InvalidInputError, match="seed ids must stay below"):
        segment(np.ones((2, 4, 4), np.float32), WatershedParameters(offsets=[(1, 0), (0, 1)]),
                seeds=seeds)
