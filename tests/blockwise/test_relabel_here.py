"""The relabel and the pyramid of a small local region, in the job process in threads, give
what relabel and pyramid workers give."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zarr

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.blockwise import job
from napari_mutex_watershed.blockwise.launch import segment_blockwise_zarr, work_dir_for
from napari_mutex_watershed.blockwise.plan import DONE_HERE
from napari_mutex_watershed.blockwise.pyramid import downsample_mode
from napari_mutex_watershed.blockwise.relabel_here import downsample_in_slabs
from napari_mutex_watershed.storage import write_affinities
from napari_mutex_watershed.storage.levels import labels_levels
from napari_mutex_watershed.synthetic import sample_volume


@pytest.mark.parametrize("shape, step", [((9, 10, 11), (2, 2, 2)), ((16, 32, 32), (1, 2, 2)),
                                         ((7, 33, 30), (1, 2, 2)), ((13, 15), (2, 2))])
@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_slabs_downsample_like_the_whole_array(shape, step, parts):
    data = np.random.default_rng(sum(shape)).integers(0, 4, shape).astype(np.uint32)
    expected = downsample_mode(data, step)
    with ThreadPoolExecutor(2) as pool:
        got = downsample_in_slabs(data, step, expected.shape, pool, parts)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.slow
def test_threads_in_the_job_write_what_workers_write(tmp_path, monkeypatch):
    affinities, _, offsets = sample_volume((24, 128, 128), seed=3)
    source = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    parameters = WatershedParameters(offsets=offsets, bias_short=0.4, bias_long=0.6)
    levels = {}
    for where in ("job", "workers"):
        if where == "workers":
            monkeypatch.setattr(job, "IN_PROCESS_VOXELS", 0)
        output = segment_blockwise_zarr(source, tmp_path / f"{where}.zarr/labels", parameters,
                                        block_size=(12, 32, 32), num_workers=2,
                                        progress="none", supervised=False)
        work_dir = work_dir_for(output.parent)
        # daisy writes a log folder per step it starts; the job marks what it did itself
        assert (work_dir / "logs" / "relabel").exists() == (where == "workers")
        assert (work_dir / "tracking" / "relabel" / DONE_HERE).exists() == (where == "job")
        levels[where] = [zarr.open_array(str(path), mode="r")[...]
                         for path, _ in labels_levels(output.parent)]
    assert len(levels["job"]) == len(levels["workers"]) >= 3
    assert levels["job"][0].max() > 10
    for threads, workers in zip(levels["job"], levels["workers"]):
        np.testing.assert_array_equal(threads, workers)
