"""A mask and seeds in blockwise runs, with real daisy workers: the whole-volume engine's
semantics (outside the mask 0, one object per seed id with that id) across block faces; and
the pieces they rest on (seeded kernel labels, the stitch's seed nodes) without workers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import zarr
from skimage.metrics import adapted_rand_error

from napari_mutex_watershed import WatershedParameters, segment
from napari_mutex_watershed.blockwise.even_blocks import EvenBlocks
from napari_mutex_watershed.blockwise.job import ProgressReporter, _run_tasks
from napari_mutex_watershed.blockwise.launch import plan_run, segment_blockwise_zarr
from napari_mutex_watershed.blockwise.mask_seeds import compact_seeded
from napari_mutex_watershed.blockwise.plan import PLAN_FILE
from napari_mutex_watershed.blockwise.stitch import join_fragments
from napari_mutex_watershed.engine import edge_weights, run_kernel
from napari_mutex_watershed.storage import labels_level0, write_affinities, write_labels
from napari_mutex_watershed.synthetic import affinities_from_labels, sample_volume

CLI = [sys.executable, "-m", "napari_mutex_watershed.cli"]
SHAPE = (24, 64, 64)
BLOCKS = (12, 32, 32)
OFFSETS = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (3, 0, 0), (0, 3, 0), (0, 0, 3)]


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """Affinities, truth, mask (a slab and a corner cut away) and two seeds across faces."""
    affinities, truth, offsets = sample_volume(SHAPE, seed=3)
    folder = tmp_path_factory.mktemp("guides")
    path = write_affinities(folder / "in.zarr/affinities", affinities, offsets)
    mask = np.ones(SHAPE, np.uint8)
    mask[:, :, 40:50] = 0
    mask[:6, :20, :20] = 0
    write_labels(folder / "in.zarr/mask", mask)
    return path, affinities, truth, mask, folder


def read(path) -> np.ndarray:
    return zarr.open_array(str(labels_level0(path)), mode="r")[:]


def test_seeded_kernel_labels_become_small_ids_that_remember_their_seed():
    # the kernel names seeded segments by their seed id (any size), the others above it
    raw = np.array([[0, 10**12, 10**12], [10**12 + 5, 7, 0]], np.uint64)
    seeds = np.array([[0, 10**12, 0], [0, 7, 0]], np.uint64)
    compact, seed_of = compact_seeded(raw, seeds)
    assert compact.max() < raw.size + 1 and (compact == 0).tolist() == (raw == 0).tolist()
    assert seed_of[compact].tolist() == [[0, 10**12, 10**12], [0, 7, 0]]


def test_a_block_without_seeds_gets_the_unseeded_kernel_labels():
    affinities, _, offsets = sample_volume((12, 24, 24), seed=2)
    parameters = WatershedParameters(offsets=offsets)
    weights, _ = edge_weights(affinities, parameters)
    no_seeds = np.zeros(affinities.shape[1:], np.uint64)
    compact, seed_of = compact_seeded(run_kernel(weights.copy(), parameters, no_seeds),
                                      no_seeds)
    np.testing.assert_array_equal(compact, run_kernel(weights, parameters))
    assert not seed_of.any() and len(seed_of) > compact.max()


def test_the_stitch_keeps_seed_ids_apart_and_joins_each_seed_id():
    # a chain 0 -9- 1 -8- 2 with seed 5 on 0 and seed 6 on 2: 1 goes with the stronger
    # join, 0 and 2 stay apart; 3 and 4 carry one seed id and no join: one segment
    u, v, overlap = np.array([0, 1]), np.array([1, 2]), np.array([9.0, 8.0])
    none = np.zeros(0, np.int64)
    segment = join_fragments(5, u, v, overlap, none, none, np.zeros(0),
                             node_seed=np.array([5, 0, 6, 7, 7]))
    assert segment.tolist() == [0, 0, 2, 3, 3]
    assert join_fragments(3, u, v, overlap, none, none, np.zeros(0)).tolist() == [0, 0, 0]


def params(offsets=None, **extra) -> WatershedParameters:
    return WatershedParameters(bias_short=0.4, bias_long=0.6,
                               **({"offsets": offsets} if offsets else {}), **extra)


@pytest.mark.slow
def test_the_mask_is_respected_across_blocks(volume, tmp_path):
    path, affinities, _, mask, folder = volume
    output = tmp_path / "o.zarr/labels"
    result = subprocess.run(
        [*CLI, "segment", str(path), str(output), "--bias-short", "0.4", "--bias-long", "0.6",
         "--block-size", *map(str, BLOCKS), "--mask", str(folder / "in.zarr/mask"),
         "--progress", "none"], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    labels = read(output)
    assert not labels[mask == 0].any()
    whole = segment(affinities, params(), mask=mask.astype(bool))
    assert ((labels > 0) == (whole > 0)).mean() > 0.99  # cut away, not emptied
    assert adapted_rand_error(whole, labels)[0] < 0.01


def _seeded_bar(tmp_path):
    """One bar through three blocks along x (even, odd, even) and two cubes, one in each
    even block; affinities that join every voxel of one object."""
    truth = np.zeros((8, 8, 48), np.uint32)
    truth[2:6, 2:6, :] = 1
    truth[0:2, 0:2, 2:5] = 2
    truth[0:2, 0:2, 43:46] = 3
    affinities = affinities_from_labels(truth, OFFSETS, sigma=0, noise=0)
    path = write_affinities(tmp_path / "in.zarr/affinities", affinities, OFFSETS)
    return path, affinities, truth


@pytest.mark.slow
def test_two_seeds_in_one_object_never_merge_and_one_seed_id_is_one_object(tmp_path):
    path, affinities, truth = _seeded_bar(tmp_path)
    seeds = np.zeros(truth.shape, np.uint16)
    seeds[3, 3, 2] = 500  # deep in the first even block: the odd block sees neither seed,
    seeds[3, 3, 45] = 600  # only the even labels around it, which it joins
    seeds[0, 0, 3] = seeds[1, 1, 44] = 700  # one id on two cubes apart, in two blocks
    write_labels(tmp_path / "in.zarr/seeds", seeds)
    parameters = params(OFFSETS, context=(3, 3, 3))
    out = segment_blockwise_zarr(path, tmp_path / "o.zarr/labels", parameters,
                                 block_size=(8, 8, 16), num_workers=2, progress="none",
                                 supervised=False, seeds_path=tmp_path / "in.zarr/seeds")
    labels = read(out)
    assert labels[3, 3, 2] == 500 and labels[3, 3, 45] == 600
    assert set(np.unique(labels[truth == 1])) == {500, 600}
    assert set(np.unique(labels[truth >= 2])) == {700}
    whole = segment(affinities, parameters, seeds=seeds)
    assert set(np.unique(whole[truth >= 2])) == {700}  # the engine's semantics


@pytest.mark.slow
def test_two_seeds_touching_across_a_face_stay_two(volume, tmp_path):
    path, _, truth, _, _ = volume
    # an object that crosses the face at x = 32, seeded on both sides of it
    z, y = next((z, y) for z in range(4, 20) for y in range(8, 56)
                if truth[z, y, 30] and (truth[z, y, 30:34] == truth[z, y, 30]).all())
    seeds = np.zeros(SHAPE, np.uint32)
    seeds[z, y, 30:32] = 3
    seeds[z, y, 32:34] = 4
    seeds[2:22, 10, 10] = 9  # a line through both blocks along z
    write_labels(tmp_path / "seeds.zarr/seeds", seeds)
    out = segment_blockwise_zarr(path, tmp_path / "o.zarr/labels", params(),
                                 block_size=BLOCKS, num_workers=2, progress="none",
                                 supervised=False, seeds_path=tmp_path / "seeds.zarr/seeds")
    labels = read(out)
    for seed in (3, 4, 9):
        assert set(np.unique(labels[seeds == seed])) == {seed}
    assert (labels == 9).sum() > 20  # the line's object, one id across the face at z = 12


@pytest.mark.slow
def test_one_block_equals_the_engine_with_mask_and_seeds(volume, tmp_path):
    path, affinities, truth, mask, folder = volume
    seeds = np.where((truth == truth[12, 32, 32]) & (np.indices(SHAPE)[2] % 7 == 0), 5, 0)
    write_labels(tmp_path / "seeds.zarr/seeds", seeds.astype(np.uint8))
    out = segment_blockwise_zarr(path, tmp_path / "o.zarr/labels", params(min_size=20),
                                 block_size=SHAPE, progress="none", supervised=False,
                                 mask_path=folder / "in.zarr/mask",
                                 seeds_path=tmp_path / "seeds.zarr/seeds")
    expected = segment(affinities, params(min_size=20), mask=mask.astype(bool), seeds=seeds)
    np.testing.assert_array_equal(read(out), expected)


@pytest.mark.parametrize("blocks", [SHAPE, BLOCKS], ids=["one block", "blockwise"])
def test_a_seed_id_beyond_uint32_is_one_line_that_says_so(volume, tmp_path, blocks):
    """The output is uint32: a seed id above it is named, in one block as in several (one
    block said '8589934595 segments do not fit ...; use a larger min_size')."""
    path, _, truth, _, _ = volume
    seeds = np.zeros(SHAPE, np.uint64)
    seeds[12, 32, 32] = 2**33
    write_labels(tmp_path / "seeds.zarr/seeds", seeds)
    done = subprocess.run(
        [*CLI, "segment", str(path), str(tmp_path / "o.zarr/labels"), "--block-size",
         *map(str, blocks), "--seeds", str(tmp_path / "seeds.zarr/seeds"), "--progress",
         "none"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(
        f"error: seed id {2**33} does not fit the uint32 output: seed ids go up to "
        f"{2**32 - 1}"), done.stderr


@pytest.mark.slow
def test_a_resumed_run_is_identical_and_other_guides_are_another_job(volume, tmp_path):
    path, _, _, _, folder = volume
    seeds = np.zeros(SHAPE, np.uint32)
    seeds[2:22, 40, 20] = 8
    write_labels(tmp_path / "seeds.zarr/seeds", seeds)
    options = {"block_size": BLOCKS, "num_workers": 2, "progress": "none",
               "mask_path": folder / "in.zarr/mask",
               "seeds_path": tmp_path / "seeds.zarr/seeds"}
    whole_run = read(segment_blockwise_zarr(path, tmp_path / "a.zarr/labels", params(),
                                            supervised=False, **options))
    # the even step alone, then the same request: it resumes from there
    plan = plan_run(path, tmp_path / "b.zarr/labels", params(), **options)
    plan_path = f"{plan.work_dir}/{PLAN_FILE}"
    _run_tasks(plan, [EvenBlocks(plan_path).daisy_task()], ProgressReporter("none", 0))
    heard = []
    resumed = read(segment_blockwise_zarr(path, tmp_path / "b.zarr/labels", params(),
                                          supervised=False, notify=heard.append, **options))
    assert heard and heard[0].startswith("resuming: 4 of 16 block steps")
    np.testing.assert_array_equal(resumed, whole_run)
    assert set(np.unique(resumed[seeds == 8])) == {8}
    # another mask is another job: not resumed into this output
    with pytest.raises(Exception, match="already exists"):
        plan_run(path, tmp_path / "b.zarr/labels", params(), **{**options, "mask_path": None})
