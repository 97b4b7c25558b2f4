"""The sweep command: inputs opened and checked, the table and the best setting."""

from __future__ import annotations

import csv

import pytest

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.sweep import (
    best,
    parameter_grid,
    run_sweep,
)


# ------------------------------------------------------------------------------ the grid
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
