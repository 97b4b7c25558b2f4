"""A real blockwise result for the GUI tests: the CLI run on sample affinities, as a user's
full run writes it (OME-Zarr labels with a pyramid)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from patience import patience

from napari_mutex_watershed.storage import write_affinities
from napari_mutex_watershed.synthetic import sample_volume


def write_cli_result(root: Path, seed: int, voxel_size, offset, **metadata) -> Path:
    """Sample affinities (24 x 64 x 64) at ``root/in.zarr/affinities`` and the CLI's labels
    at ``root/in.zarr/labels`` (12 x 32 x 32 blocks); returns the container."""
    affinities, _, offsets = sample_volume((24, 64, 64), seed=seed)
    source = write_affinities(root / "in.zarr/affinities", affinities, offsets,
                              voxel_size=voxel_size, offset=offset, **metadata)
    done = subprocess.run([sys.executable, "-m", "napari_mutex_watershed.cli", "segment",
                           str(source), str(root / "in.zarr/labels"), "--block-size", "12",
                           "32", "32", "--progress", "none"],
                          capture_output=True, text=True, timeout=patience(100), check=False)
    assert done.returncode == 0, done.stderr
    return root / "in.zarr"
