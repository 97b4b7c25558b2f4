"""A blockwise result written by the CLI, once per session, in both formats: OME-Zarr 0.5 on
zarr v3 (the default) and 0.4 on zarr v2 (``--zarr-format 2``). Anisotropic voxels (8, 4, 4)
nm and an offset, so every reader's geometry is checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from napari_mutex_watershed.storage import write_affinities
from napari_mutex_watershed.synthetic import sample_volume

SHAPE = (24, 96, 96)
VOXEL, OFFSET = (8, 4, 4), (80, 40, 40)
BLOCK = (12, 32, 32)
#: Pyramid of SHAPE with BLOCK chunks: y and x (finer) are halved first, then all three.
LEVELS = [(24, 96, 96), (24, 48, 48), (12, 24, 24)]
SCALES = [(8, 4, 4), (8, 8, 8), (16, 16, 16)]


def run_segment(source: Path, output: Path, *extra: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "napari_mutex_watershed.cli", "segment", str(source),
         str(output), "--block-size", *map(str, BLOCK), "--progress", "none", *extra],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="session")
def result(tmp_path_factory):
    """{"v3": labels group, "v2": labels group, "input": affinities path}."""
    root = tmp_path_factory.mktemp("result")
    affinities, _, offsets = sample_volume(SHAPE, seed=5)
    source = write_affinities(root / "in.zarr/affinities", affinities, offsets,
                              voxel_size=VOXEL, offset=OFFSET, units=["nm"] * 3)
    outputs = {"input": source, "v3": root / "out.zarr/labels",
               "v2": root / "out_v2.zarr/labels"}
    run_segment(source, outputs["v3"])
    run_segment(source, outputs["v2"], "--zarr-format", "2")
    return outputs
