"""The results as CSV."""

from __future__ import annotations

import csv

import pytest

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.sweep import (
    best,
    parameter_grid,
    run_sweep,
    write_csv,
)


# ------------------------------------------------------------------------------ the grid
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
