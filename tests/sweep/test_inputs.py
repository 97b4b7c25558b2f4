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


# ------------------------------------------------------------------------------ the truth
def test_the_ground_truth_lines_up_and_negative_ids_are_unlabelled(tmp_path, caplog):
    """A truth without geometry covers the affinities' voxels (not the origin), negative ids
    are unlabelled as 0 is, with a line each; a truth off the voxel grid is refused."""
    import numpy as np
    import zarr

    from napari_mutex_watershed.errors import InvalidInputError
    from napari_mutex_watershed.storage import create_array, write_affinities
    from napari_mutex_watershed.sweep.inputs import open_sweep_data
    from napari_mutex_watershed.synthetic import sample_volume

    affinities, truth, offsets = sample_volume((8, 32, 32), seed=2)
    source = write_affinities(tmp_path / "a.zarr/affinities", affinities, offsets,
                              voxel_size=(4, 2, 2), offset=(8, 4, 4))
    plain = tmp_path / "t.zarr/plain"  # no metadata at all, -1 for "ignore"
    zarr.create_array(str(plain), data=np.where(truth > 0, truth, -1).astype(np.int32))
    data = open_sweep_data(source, plain)
    np.testing.assert_array_equal(data.ground_truth, truth)
    assert data.labelled == np.count_nonzero(truth)
    assert "taken to cover the affinities' voxels" in caplog.text
    assert f"{np.count_nonzero(truth <= 0)} voxels with negative ids" in caplog.text

    # an offset of its own, without a voxel size: kept (voxel size 1, as the affinities')
    plain_source = write_affinities(tmp_path / "p.zarr/affinities", affinities, offsets)
    shifted = zarr.create_array(str(tmp_path / "t.zarr/shifted"), data=truth)
    shifted.attrs["offset"] = [4, 0, 0]
    placed = open_sweep_data(plain_source, tmp_path / "t.zarr/shifted").ground_truth
    np.testing.assert_array_equal(placed[4:], truth[:4])
    assert not placed[:4].any()

    off_grid = tmp_path / "t.zarr/off_grid"
    create_array(off_grid, "off_grid", truth.shape, np.uint32, ["z", "y", "x"],
                 voxel_size=(4, 2, 2), offset=(9, 5, 5))[...] = truth
    with pytest.raises(InvalidInputError, match="off the affinities' voxel grid"):
        open_sweep_data(source, off_grid)

    # a crop stored at the affinities' own offset is placed there (it was refused as not
    # lining up); one that stores no offset is taken to start at 0 and refused
    crop = tmp_path / "t.zarr/crop"
    create_array(crop, "crop", (4, 32, 32), np.uint32, ["z", "y", "x"], voxel_size=(4, 2, 2),
                 offset=(8, 4, 4))[...] = truth[:4]
    placed = open_sweep_data(source, crop).ground_truth
    np.testing.assert_array_equal(placed[:4], truth[:4])
    assert not placed[4:].any()
    unplaced = zarr.create_array(str(tmp_path / "t.zarr/unplaced"), data=truth[:4])
    unplaced.attrs["resolution"] = [1, 1, 1]
    with pytest.raises(InvalidInputError, match="the ground truth has shape \\(4, 32, 32\\) "
                       "but the affinities \\(8, 32, 32\\), both starting at"):
        open_sweep_data(plain_source, tmp_path / "t.zarr/unplaced")


def test_a_parameters_file_s_bias_is_kept():
    from napari_mutex_watershed.errors import InvalidInputError
    from napari_mutex_watershed.sweep.inputs import settings_for

    base = WatershedParameters(bias=0.42)
    settings = settings_for(base, threshold=["0", "0.5"], keep_bias=True)
    assert [s.parameters.bias for s in settings] == [0.42, 0.42]
    assert [s.name for s in settings] == ["threshold=0.00", "threshold=0.50"]
    assert len(settings_for(base, bias=["0.3", "0.6"], keep_bias=True)) == 2  # asked for
    assert len(settings_for(base)) == 5  # DaCapo's biases
    with pytest.raises(InvalidInputError, match="sets the bias, which the sweep keeps"):
        settings_for(base, keep_bias=True)
