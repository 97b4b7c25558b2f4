"""Parameter sweeps: the grid, scoring against sparse ground truth, ranking, workers, CLI."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import astuple

import numpy as np
import psutil
import pytest
from patience import patience, wait_gone
from skimage.metrics import adapted_rand_error, variation_of_information

from napari_mutex_watershed import WatershedParameters, segment
from napari_mutex_watershed.sweep import (
    DEFAULT_BIASES,
    Scores,
    Setting,
    SweepInputs,
    Sweeper,
    SweepResult,
    best,
    format_table,
    parameter_grid,
    parse_values,
    rank,
    run_sweep,
    score,
    table_rows,
    value_range,
    write_csv,
)


# ------------------------------------------------------------------------------ the grid
def test_values_and_ranges():
    assert parse_values("0.1, 0.25 0.5") == [0.1, 0.25, 0.5]
    assert parse_values("0.3:0.7:0.1") == [0.3, 0.4, 0.5, 0.6, 0.7]  # stop included
    assert parse_values(["0.2:0.4:0.1", "0.3", "0.9"]) == [0.2, 0.3, 0.4, 0.9]  # no repeats
    assert parse_values("0:100:25", int) == [0, 25, 50, 75, 100]
    assert parse_values("") is None and parse_values(None) is None
    assert value_range(0.1, 0.9, 0.2) == [0.1, 0.3, 0.5, 0.7, 0.9]
    with pytest.raises(ValueError, match="cannot read"):
        parse_values("0.1, abc")
    with pytest.raises(ValueError, match="start <= stop"):
        parse_values("0.9:0.1:0.1")
    with pytest.raises(ValueError, match="positive step"):
        parse_values("0.1:0.9:0")
    with pytest.raises(ValueError, match="whole numbers"):
        parse_values("2.5", int)


def test_grid_is_uniform_bias_in_a_fixed_order():
    base = WatershedParameters(bias_short=0.3, sigma=1.0)
    settings = parameter_grid(base)
    assert [s.value("bias") for s in settings] == list(DEFAULT_BIASES)
    assert [s.name for s in settings][:2] == ["bias=0.10", "bias=0.25"]
    for setting in settings:
        assert setting.parameters.bias == setting.value("bias")
        assert np.all(setting.parameters.biases() == setting.value("bias"))  # every offset
        assert setting.parameters.sigma == 1.0  # the rest comes from the base
    grid = parameter_grid(base, bias=[0.5, 0.7], threshold=[0.1], min_size=[0, 20])
    assert [s.name for s in grid] == [
        "bias=0.50 threshold=0.10 min_size=0", "bias=0.50 threshold=0.10 min_size=20",
        "bias=0.70 threshold=0.10 min_size=0", "bias=0.70 threshold=0.10 min_size=20",
    ]
    assert [s.index for s in grid] == [0, 1, 2, 3]
    only_size = parameter_grid(base, bias=None, min_size=[5])
    assert only_size[0].name == "min_size=5" and only_size[0].parameters.bias is None
    with pytest.raises(ValueError, match="bias=1.50"):
        parameter_grid(base, bias=[0.5, 1.5])
    with pytest.raises(ValueError, match="nothing to sweep"):
        parameter_grid(base, bias=None)
    with pytest.raises(ValueError, match="at most"):
        parameter_grid(base, bias=parse_values("0:1:0.01"), min_size=[0, 1])


# ------------------------------------------------------------------------------ scoring
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


def test_shown_part_mask_and_seeds(sample_3d):
    """Labels and scores cover the shown part of the crop (a slice in napari's 2D view)."""
    affinities, truth, offsets = sample_3d
    crop = affinities[:, 4:11]
    shown = (slice(3, 4), slice(None), slice(None))
    mask = np.ones(crop.shape[1:], bool)
    mask[:, :10] = False
    seeds = np.zeros(crop.shape[1:], np.uint32)
    seeds[3, 30, 30] = 99
    settings = parameter_grid(WatershedParameters(offsets=offsets), bias=[0.5])
    (result,) = run_sweep(crop, settings, truth[7:8], shown=shown, mask=mask, seeds=seeds,
                          workers=0)
    full = segment(crop, settings[0].parameters, mask=mask, seeds=seeds)
    np.testing.assert_array_equal(result.labels, full[shown])
    assert result.labels[0, 30, 30] == 99 and not result.labels[0, :10].any()
    assert result.scores == score(full[shown], truth[7:8])
    assert result.n_segments == len(np.unique(full[shown])) - 1


def test_failed_setting_is_reported(sample_2d):
    affinities, truth, offsets = sample_2d
    bad = parameter_grid(WatershedParameters(offsets=offsets + [(3, 3)]), bias=[0.5])
    (result,) = run_sweep(affinities, bad, truth, workers=1)
    assert result.error and "channel" in result.error
    assert best([result]) is None


def test_csv(tmp_path, sample_2d):
    affinities, truth, offsets = sample_2d
    settings = parameter_grid(WatershedParameters(offsets=offsets), bias=[0.3, 0.6],
                              min_size=[0, 10])
    results = run_sweep(affinities, settings, truth, workers=0)
    path = write_csv(results, tmp_path / "sweep.csv")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and rows[0]["rank"] == "1"
    assert rows[0]["setting"] == best(results).name
    assert float(rows[0]["adapted_rand_error"]) == pytest.approx(
        best(results).adapted_rand_error)
    saved = WatershedParameters.model_validate_json(rows[0]["parameters"])
    assert saved == best(results).parameters  # each row can be re-run as it is


def test_a_killed_worker_fails_its_setting_not_the_sweep(sample_3d):
    affinities, truth, offsets = sample_3d
    big = np.tile(affinities, (1, 2, 2, 2))  # 48 x 96 x 96: a second or so per setting
    settings = parameter_grid(WatershedParameters(offsets=offsets), bias=[0.4, 0.6])
    with Sweeper(workers=1) as sweeper:
        job = sweeper.start(SweepInputs(big), settings)
        pid = wait_inside_a_setting(sweeper, job, seconds=20)
        os.kill(pid, signal.SIGKILL)
        results = job.wait(timeout=patience(20))
        assert job.done and not job.error
        assert any("stopped unexpectedly" in (r.error or "") for r in results)
        # the sweeper starts fresh workers for the next sweep
        (result,) = sweeper.start(SweepInputs(affinities), settings[:1]).wait(
            timeout=patience(20))
        assert result.error is None and result.n_segments > 0


def test_workers_exit_when_their_parent_dies(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import os, sys, time
        import numpy as np
        from napari_mutex_watershed import WatershedParameters
        from napari_mutex_watershed.sweep import Sweeper, SweepInputs, parameter_grid

        if __name__ == "__main__":
            sweeper = Sweeper(workers=2)
            settings = parameter_grid(WatershedParameters(offsets=[(1, 0), (0, 1)]),
                                      bias=[0.4, 0.6])
            job = sweeper.start(SweepInputs(np.random.rand(2, 32, 32)), settings)
            job.wait(timeout=600)
            print(*sweeper.worker_pids(), flush=True)
            os._exit(1)  # a crash: nothing is cleaned up
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=patience(40))
    pids = [int(p) for p in out.stdout.split()]
    assert pids, out.stderr
    workers = []
    for pid in pids:
        try:
            workers.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass  # already gone
    assert wait_gone(workers, seconds=10) == []


def wait_inside_a_setting(sweeper, job, seconds: float) -> int:
    """The pid of a worker once it computes a setting: it has the job's affinities mapped
    (run_setting memory-maps them while it segments). A condition, not a guessed delay."""
    deadline = time.monotonic() + patience(seconds)
    while time.monotonic() < deadline:
        crop = job._directory and os.path.join(job._directory, "affinities.npy")
        for pid in sweeper.worker_pids():
            try:
                if crop and any(m.path == crop for m in psutil.Process(pid).memory_maps()):
                    return pid
            except psutil.Error:
                pass
        time.sleep(0.01)  # (polling the condition)
    raise TimeoutError("no worker started a setting")


# ------------------------------------------------------------------------------ CLI
def test_cli_sweep(tmp_path, capsys):
    from napari_mutex_watershed.cli import main

    sample = tmp_path / "s.zarr"
    assert main(["sample", str(sample), "--shape", "24", "48", "48"]) == 0
    capsys.readouterr()
    table = tmp_path / "sweep.csv"
    code = main(["sweep", f"{sample}/affinities", "--gt", f"{sample}/ground_truth",
                 "--roi", "0", "0", "0", "24", "40", "48", "--bias", "0.3:0.7:0.2", "0.9",
                 "--min-size", "0", "20", "--workers", "2", "--csv", str(table)])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["Rank", "Setting"]
    assert [line.split()[0] for line in lines[1:9]] == [str(i) for i in range(1, 9)]
    assert all("min_size=" in line for line in lines[1:9])
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8
    assert f"best: {rows[0]['setting']}" in out

    # the same numbers as the library on the same crop
    from napari_mutex_watershed.synthetic import sample_volume

    affinities, truth, offsets = sample_volume((24, 48, 48))
    settings = parameter_grid(WatershedParameters(offsets=offsets), bias=[0.3, 0.5, 0.7, 0.9],
                              min_size=[0, 20])
    expected = run_sweep(affinities[:, :, :40], settings, truth[:, :40], workers=0)
    assert rows[0]["setting"] == best(expected).name
    assert float(rows[0]["adapted_rand_error"]) == pytest.approx(
        best(expected).adapted_rand_error)

    assert main(["sweep", f"{sample}/affinities", "--gt", f"{sample}/ground_truth",
                 "--roi", "0", "0", "24"]) == 1
    assert "--roi takes 3 offsets" in capsys.readouterr().err
    assert main(["sweep", f"{sample}/affinities", "--gt", f"{sample}/nothing"]) == 1
    assert "no ground truth" in capsys.readouterr().err
    assert main(["sweep", f"{sample}/affinities", "--gt", f"{sample}/ground_truth",
                 "--bias", "2"]) == 1
    assert "bias=2" in capsys.readouterr().err
