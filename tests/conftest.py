"""Shared fixtures: small synthetic volumes built in memory once per session.

Fixtures hand out read-only arrays so that one test cannot change another's input.
"""

from __future__ import annotations

import pytest

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.synthetic import sample_volume

SHAPE_3D = (24, 48, 48)
SHAPE_2D = (96, 96)


def _frozen(*arrays):
    for array in arrays:
        array.flags.writeable = False
    return arrays


@pytest.fixture(scope="session")
def sample_3d():
    """(affinities float32 (6, 24, 48, 48), ground truth, offsets)."""
    affs, labels, offsets = sample_volume(SHAPE_3D)
    _frozen(affs, labels)
    return affs, labels, offsets


@pytest.fixture(scope="session")
def sample_2d():
    """(affinities float32 (4, 96, 96), ground truth, offsets)."""
    affs, labels, offsets = sample_volume(SHAPE_2D)
    _frozen(affs, labels)
    return affs, labels, offsets


@pytest.fixture(scope="session")
def noisy_3d():
    """Noisier 3D sample (noise 0.3), where smoothing matters."""
    affs, labels, offsets = sample_volume(SHAPE_3D, seed=3, noise=0.3)
    _frozen(affs, labels)
    return affs, labels, offsets


@pytest.fixture(scope="session")
def params_3d(sample_3d) -> WatershedParameters:
    return WatershedParameters(offsets=sample_3d[2])


@pytest.fixture(scope="session")
def params_2d(sample_2d) -> WatershedParameters:
    return WatershedParameters(offsets=sample_2d[2])


@pytest.fixture(scope="session")
def segmented_3d(sample_3d, params_3d):
    """The default segmentation of the 3D sample (computed once)."""
    from napari_mutex_watershed import segment

    labels = segment(sample_3d[0], params_3d)
    labels.flags.writeable = False
    return labels


@pytest.fixture
def zarr_round_trips(monkeypatch):
    """Counts zarr's round trips through its event loop thread (``zarr.core.sync.sync``, about
    1 ms each): a list with one entry per call, wherever zarr's modules call it from."""
    import sys

    import zarr.core.sync

    calls = []
    original = zarr.core.sync.sync

    def counted(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "zarr" and getattr(module, "sync", None) is original:
            monkeypatch.setattr(module, "sync", counted)
    return calls
