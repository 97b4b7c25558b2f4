"""Scores over labelled voxels only, and a deterministic ranking."""

from __future__ import annotations

from dataclasses import astuple

import numpy as np
import pytest
from skimage.metrics import adapted_rand_error, variation_of_information

from napari_mutex_watershed import WatershedParameters, segment
from napari_mutex_watershed.sweep import (
    DEFAULT_BIASES,
    Scores,
    Setting,
    SweepResult,
    best,
    format_table,
    parameter_grid,
    rank,
    run_sweep,
    score,
    table_rows,
)


# ------------------------------------------------------------------------------ the grid
def test_scores_are_skimage_metrics_over_labelled_voxels(sample_3d, segmented_3d):
    _, truth, _ = sample_3d
    scores = score(segmented_3d, truth)
    error, _, _ = adapted_rand_error(truth, segmented_3d, ignore_labels=(0,))
    split, merge = variation_of_information(truth, segmented_3d, ignore_labels=(0,))
    assert astuple(scores) == pytest.approx((error, split, merge))
    assert astuple(score(truth, truth)) == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)

    # sparse ground truth: only labelled voxels count
    sparse = truth.copy()
    sparse[:, :, 24:] = 0
    other = segmented_3d.copy()
    other[:, :, 24:] = 7  # anything in the unlabelled half
    assert astuple(score(other, sparse)) == pytest.approx(astuple(score(segmented_3d, sparse)))
    assert astuple(score(segmented_3d, sparse)) != pytest.approx(astuple(scores))
    # negative ids (a common "ignore") are unlabelled too, not an object
    ignored = np.where(sparse > 0, sparse, -1).astype(np.int32)
    assert astuple(score(segmented_3d, ignored)) == pytest.approx(
        astuple(score(segmented_3d, sparse)))

    # a merge of everything: no split, a large merge; ids need not be consecutive
    merged = np.full(truth.shape, 2**40, np.uint64)
    merged_scores = score(merged, truth.astype(np.uint64) * 1000)
    assert merged_scores.voi_split == pytest.approx(0.0, abs=1e-12)
    assert merged_scores.voi_merge > 1 and merged_scores.adapted_rand_error > 0.5
    assert score(segmented_3d, np.zeros_like(truth)) is None
    with pytest.raises(ValueError, match="shape"):
        score(segmented_3d, truth[:-1])


def _result(index, error, bias, failed=False):
    setting = Setting(index, (("bias", bias),), WatershedParameters(bias=bias))
    if failed:
        return SweepResult(setting, error="boom")
    scores = None if error is None else Scores(error, 0.1, 0.2)
    return SweepResult(setting, labels=None, n_segments=3, scores=scores)


def test_ranking_breaks_ties_by_grid_order():
    results = [_result(3, 0.2, 0.9), _result(0, None, 0.1), _result(2, 0.1, 0.75),
               _result(1, 0.1, 0.5), _result(4, None, 0.2, failed=True)]
    assert [r.setting.index for r in rank(results)] == [1, 2, 3, 0, 4]
    assert best(results).name == "bias=0.50"
    assert best(list(reversed(results))).name == "bias=0.50"
    assert best([_result(0, None, 0.1)]) is None
    rows = table_rows(results)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[3]["adapted_rand_error"] is None and rows[4]["error"] == "boom"
    text = format_table(results)
    assert text.splitlines()[1].split()[:3] == ["1", "bias=0.50", "0.1000"]
    assert "error: boom" in text


# ------------------------------------------------------------------------------ running
def _without_times(results):
    return [(r.name, r.scores, r.n_segments) for r in results]


def test_best_bias_on_the_sample_is_the_lowest_error_and_deterministic(sample_3d):
    affinities, truth, offsets = sample_3d
    settings = parameter_grid(WatershedParameters(offsets=offsets))
    parallel = run_sweep(affinities, settings, truth, workers=2)
    again = run_sweep(affinities, settings, truth, workers=2)
    inline = run_sweep(affinities, settings, truth, workers=0)
    assert _without_times(parallel) == _without_times(again) == _without_times(inline)

    expected = {}
    for bias in DEFAULT_BIASES:
        labels = segment(affinities, WatershedParameters(offsets=offsets, bias=bias))
        expected[bias] = adapted_rand_error(truth, labels, ignore_labels=(0,))[0]
        result = next(r for r in parallel if r.setting.value("bias") == bias)
        np.testing.assert_array_equal(result.labels, labels)
        assert result.adapted_rand_error == pytest.approx(expected[bias])
    lowest = min(DEFAULT_BIASES, key=lambda b: (expected[b], DEFAULT_BIASES.index(b)))
    assert best(parallel).setting.value("bias") == lowest
    assert parallel[0] is best(parallel)
    assert 0.25 < lowest < 0.9  # neither extreme of the grid: the sweep is informative
    errors = [r.adapted_rand_error for r in parallel]
    assert errors == sorted(errors)
