"""The DaCapo reference API (napari_mutex_watershed.dacapo): documented examples, promises."""

from __future__ import annotations

import doctest
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr
from funlib.geometry import Coordinate, Roi
from pydantic import ValidationError
from scipy import ndimage
from skimage.metrics import adapted_rand_error

from napari_mutex_watershed import WatershedParameters, segment
from napari_mutex_watershed.attributes import PARAMETERS_ATTR
from napari_mutex_watershed.dacapo import (
    DEFAULT_BIAS_VALUES,
    WATERSHED_WORKER,
    LocalArrayIdentifier,
    PostProcessor,
    WatershedPostProcessor,
    WatershedPostProcessorParameters,
    ZarrArray,
    block_unique_ids,
    require_block_aligned_chunks,
    segment_blockwise,
)
from napari_mutex_watershed.dacapo import arrays as arrays_module
from napari_mutex_watershed.dacapo import post_processor as post_processor_module
from napari_mutex_watershed.errors import (
    InvalidInputError,
    OutputExistsError,
    UnsafeOutputError,
    UsageError,
)
from napari_mutex_watershed.storage import write_affinities, write_labels
from napari_mutex_watershed.synthetic import sample_volume

ROOT = Path(__file__).resolve().parents[1]
THRESHOLD_WORKER = ROOT / "docs" / "examples" / "threshold_worker.py"
VOXEL_SIZE = Coordinate(2, 1, 1)
BLOCK = Coordinate(12, 32, 32)  # voxels
# threshold, sigma and min_size away from their defaults, so the CLI comparison shows that
# every value reaches the engine
BASE = dict(threshold=0.3, sigma=0.5, min_size=20, context=(6, 9, 9))  # context in nm
DOC_EXAMPLE = dict(offsets=[(0, 0, 1), (0, 1, 0), (1, 0, 0)], threshold=0.5, sigma=1.0,
                   min_size=100, bias=0.5, context=(32, 32, 32))


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """24 x 64 x 64 sample affinities with voxel size (2, 1, 1), and the ground truth."""
    affinities, truth, offsets = sample_volume((24, 64, 64), seed=3)
    container = tmp_path_factory.mktemp("dacapo") / "sample.zarr"
    write_affinities(container / "affinities", affinities, offsets, voxel_size=VOXEL_SIZE)
    return LocalArrayIdentifier(container, "affinities"), affinities, truth, offsets


# ---------------------------------------------------------------------------- parameters
def test_documented_parameters_example_and_immutability():
    parameters = WatershedPostProcessorParameters(**DOC_EXAMPLE)
    assert parameters.id == 0
    assert parameters.offsets == ((0, 0, 1), (0, 1, 0), (1, 0, 0))
    assert isinstance(parameters.context, Coordinate) and parameters.context == (32, 32, 32)
    with pytest.raises(ValidationError, match="frozen"):
        parameters.bias = 0.9
    assert hash(parameters) == hash(WatershedPostProcessorParameters(**DOC_EXAMPLE))
    # DaCapo's defaults
    default = WatershedPostProcessorParameters()
    assert (default.bias, default.context, default.offsets) == (0.5, Coordinate(32, 32, 32), None)


def test_parameters_map_onto_watershed_parameters():
    parameters = WatershedPostProcessorParameters(
        **{**DOC_EXAMPLE, "context": Coordinate(5, 9, 16), "bias": 0.25}
    )
    mapped = parameters.watershed_parameters(voxel_size=(2, 1, 4))
    assert mapped.offsets == [(0, 0, 1), (0, 1, 0), (1, 0, 0)]
    assert mapped.biases().tolist() == [0.25, 0.25, 0.25]  # one uniform bias
    assert mapped.context == [3, 9, 4]  # world units -> voxels, rounded up
    assert (mapped.threshold, mapped.sigma, mapped.min_size) == (0.5, 1.0, 100)
    # offsets of the parameters win over the post-processor's; without any it is an error
    other = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 9)]
    assert parameters.watershed_parameters((1, 1, 1), offsets=other).offsets == mapped.offsets
    no_offsets = WatershedPostProcessorParameters()
    assert no_offsets.watershed_parameters((1, 1, 1), offsets=other).offsets == other
    with pytest.raises(InvalidInputError, match="no offsets"):
        no_offsets.watershed_parameters((1, 1, 1))


@pytest.mark.parametrize("bad, message", [
    ({"bias": 1.5}, "less than or equal to 1"),
    ({"threshold": -0.1}, "greater than or equal to 0"),
    ({"min_size": -1}, "greater than or equal to 0"),
    ({"context": (32, 32)}, "has 2 values but the offsets are 3D"),
    ({"context": (1, -1, 1)}, "context must be >= 0"),
    ({"context": (32.5, 32, 32)}, "expected a sequence of integers"),  # not truncated
    ({"offsets": [(0, 0, 0)]}, "is zero"),
    ({"gamma": 1}, "Extra inputs are not permitted"),
])
def test_invalid_parameters_are_refused(bad, message):
    with pytest.raises(ValidationError, match=message):
        WatershedPostProcessorParameters(**{**DOC_EXAMPLE, **bad})


def test_docstring_examples():
    for module in (arrays_module, post_processor_module):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__


# ---------------------------------------------------------------------------- post-processor
def test_enumerate_parameters_default_and_custom_grid():
    offsets = [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
    default = list(WatershedPostProcessor(offsets).enumerate_parameters())
    assert [p.id for p in default] == [0, 1, 2, 3, 4]
    assert [p.bias for p in default] == [0.1, 0.25, 0.5, 0.75, 0.9] == list(DEFAULT_BIAS_VALUES)
    assert all(p.offsets == tuple(offsets) and p.context == (32, 32, 32) for p in default)

    grid = WatershedPostProcessor(
        offsets, bias_values=[0.4, 0.6], threshold_values=[0.0, 0.5], sigma_values=[1.0],
        min_size_values=[0, 50], context_values=[(8, 8, 8)],
    )
    parameters = list(grid.enumerate_parameters())
    assert [p.id for p in parameters] == list(range(8))
    assert [(p.bias, p.threshold, p.min_size) for p in parameters] == [
        (b, t, m) for b in (0.4, 0.6) for t in (0.0, 0.5) for m in (0, 50)
    ]  # deterministic: bias slowest, then threshold, sigma, min_size, context
    assert parameters == list(grid.enumerate_parameters())
    two_d = next(WatershedPostProcessor([(1, 0), (0, 1)]).enumerate_parameters())
    assert two_d.context == (32, 32)
    with pytest.raises(ValidationError):
        WatershedPostProcessor(offsets, bias_values=[2.0])


def test_post_processor_is_immutable_after_construction(sample):
    identifier, _, _, offsets = sample
    post_processor = WatershedPostProcessor(offsets)
    with pytest.raises(AttributeError, match="immutable"):
        post_processor.offsets = [(1, 0, 0)]
    with pytest.raises(AttributeError, match="use set_prediction"):
        post_processor.prediction_array_identifier = identifier
    with pytest.raises(AttributeError, match="immutable"):
        del post_processor.offsets
    with pytest.raises(RuntimeError, match="call set_prediction"):
        post_processor.process(WatershedPostProcessorParameters(),
                               LocalArrayIdentifier("o.zarr", "x"))

    post_processor.set_prediction(identifier)  # the documented way
    assert post_processor.prediction_array_identifier == identifier
    assert post_processor.prediction_array.num_channels == len(offsets)
    with pytest.raises(InvalidInputError, match="7 offsets"):
        WatershedPostProcessor(offsets + [(0, 4, 4)]).set_prediction(identifier)


def test_post_processor_base_is_abstract():
    with pytest.raises(TypeError, match="abstract"):
        PostProcessor()

    class Identity(PostProcessor):
        def __init__(self, scale):
            self.scale = scale  # allowed while constructing

        def enumerate_parameters(self):
            yield from ()

        def set_prediction(self, prediction_array_identifier):
            self._set_prediction_attributes(prediction=prediction_array_identifier)

        def process(self, parameters, output_array_identifier, num_workers=16, block_size=None):
            return None

    identity = Identity(2)
    identity.set_prediction("prediction")
    assert (identity.scale, identity.prediction) == (2, "prediction")
    with pytest.raises(AttributeError):
        identity.scale = 3


# ---------------------------------------------------------------------------- arrays
def test_local_array_identifier():
    identifier = LocalArrayIdentifier("a/run.zarr", "validation/3/output")
    assert str(identifier) == "a/run.zarr/validation/3/output"
    assert identifier.container == Path("a/run.zarr")
    assert identifier.dataset == "validation/3/output"
    assert repr(identifier).startswith("LocalArrayIdentifier(container=")
    assert identifier == LocalArrayIdentifier(Path("a/run.zarr"), "validation/3/output")


def test_zarr_array_create_open_read_write(tmp_path):
    identifier = LocalArrayIdentifier(tmp_path / "t.zarr", "group/affs")
    roi = Roi((8, 0, 0), (16, 8, 12))
    array = ZarrArray.create_from_array_identifier(
        identifier, ["c^", "z", "y", "x"], roi, 3, Coordinate(4, 2, 2), np.float32,
        write_size=Coordinate(8, 4, 4), name="affs",
    )
    assert str(array) == repr(array) == f"ZarrArray({tmp_path / 't.zarr'}, group/affs)"
    assert array.axes == ["c^", "z", "y", "x"]
    assert (array.spatial_axes, array.dims) == (["z", "y", "x"], 3)
    assert (array.roi, array.voxel_size, array.num_channels) == (roi, (4, 2, 2), 3)
    assert (array.dtype, array.mode, array.writable, array.name) == (np.float32, "r+", True, "affs")
    assert array.data.shape == (3, 4, 4, 6) and array.data.chunks == (3, 2, 2, 2)

    values = np.arange(3 * 4 * 4 * 6, dtype=np.float32).reshape(3, 4, 4, 6)
    array[roi] = values
    assert np.array_equal(array[roi], values)
    beyond = array[Roi((0, 0, 0), (12, 2, 2))]  # reaches before the array: zeros there
    assert beyond.shape == (3, 3, 1, 1) and np.all(beyond[:, :2] == 0)
    assert np.array_equal(beyond[:, 2], values[:, 0, :1, :1])
    # a ROI off the voxel grid is refused: funlib rounded it, a voxel away from what was asked
    for off_grid in (Roi((10, 0, 0), (8, 2, 2)), Roi((8, 0, 0), (8, 3, 2))):
        with pytest.raises(InvalidInputError, match="off .* voxel grid"):
            array[off_grid]
        with pytest.raises(InvalidInputError, match="off .* voxel grid"):
            array[off_grid] = np.zeros((3, 2, 1, 1), np.float32)
    assert np.array_equal(array[roi], values)
    array.add_metadata({"offsets": [[1, 0, 0]], "note": "x"})

    reopened = ZarrArray.open_from_array_identifier(identifier, mode="r")
    assert reopened.attrs["note"] == "x" and not reopened.writable
    with pytest.raises(PermissionError):
        reopened[roi] = values
    assert np.array_equal(pickle.loads(pickle.dumps(reopened))[roi], values)  # workers reopen

    # one channel or None: no channel axis; DaCapo's bare "c" axis name is understood
    single = ZarrArray.create_from_array_identifier(
        LocalArrayIdentifier(tmp_path / "t.zarr", "labels"), ["c", "z", "y", "x"], roi, 1,
        Coordinate(4, 2, 2), np.uint64,
    )
    assert single.axes == ["z", "y", "x"] and single.num_channels is None


def test_zarr_array_create_modes(tmp_path):
    identifier = LocalArrayIdentifier(tmp_path / "m.zarr", "labels")
    roi, voxel_size = Roi((0, 0), (8, 8)), Coordinate(1, 1)
    create = ZarrArray.create_from_array_identifier
    first = create(identifier, ["y", "x"], roi, None, voxel_size, np.uint8)
    first[roi] = 7
    again = create(identifier, ["y", "x"], roi, None, voxel_size, np.uint8)  # mode "a": reopen
    assert np.all(again[roi] == 7)  # existing data are kept
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        create(identifier, ["y", "x"], roi, None, voxel_size, np.uint16)
    with pytest.raises(OutputExistsError):
        create(identifier, ["y", "x"], roi, None, voxel_size, np.uint8, mode="w-")
    for how in ({"overwrite": True}, {"mode": "w"}):
        replaced = create(identifier, ["y", "x"], roi, None, voxel_size, np.uint16, **how)
        assert replaced.dtype == np.uint16 and np.all(replaced[roi] == 0)
    with pytest.raises(ValueError, match="voxel grid"):
        create(identifier, ["y", "x"], Roi((0, 1), (8, 8)), None, Coordinate(2, 2), np.uint8)
    with pytest.raises(InvalidInputError, match="does not exist"):
        ZarrArray.open_from_array_identifier(LocalArrayIdentifier(tmp_path / "m.zarr", "nothing"))
    # a group, or the container itself, is never replaced: only an array
    create(LocalArrayIdentifier(tmp_path / "m.zarr", "group/kept"), ["y", "x"], roi, None,
           voxel_size, np.uint8)
    for dataset, held in (("group", "holding kept"), ("", "holding group, labels")):
        with pytest.raises(UnsafeOutputError, match=f"is a group {held}: only an array"):
            create(LocalArrayIdentifier(tmp_path / "m.zarr", dataset), ["y", "x"], roi, None,
                   voxel_size, np.uint8, overwrite=True)
    assert (tmp_path / "m.zarr/group/kept").is_dir() and (tmp_path / "m.zarr/labels").is_dir()
    (tmp_path / "m.zarr/notes.txt").write_text("mine")
    with pytest.raises(UnsafeOutputError, match="is a file: only an array"):
        create(LocalArrayIdentifier(tmp_path / "m.zarr", "notes.txt"), ["y", "x"], roi, None,
               voxel_size, np.uint8, mode="w")
    with pytest.raises(OutputExistsError, match="already exists"):  # not replacing: says so
        create(LocalArrayIdentifier(tmp_path / "m.zarr", "group"), ["y", "x"], roi, None,
               voxel_size, np.uint8, mode="w-")


def test_block_unique_ids_differ_between_blocks():
    output_roi, voxel_size = Roi((0, 0), (8, 16)), Coordinate(1, 2)
    labels = np.array([[1, 1, 0, 2], [3, 3, 0, 2]] * 2)  # 4 x 4 voxels
    ids = {}
    for x in (0, 8):
        write = Roi((4, x), (4, 8))
        ids[x] = block_unique_ids(labels, write, output_roi, voxel_size)
        assert ids[x].dtype == np.uint64
        assert np.array_equal(ids[x] == 0, labels == 0)  # background stays 0
        assert len(np.unique(ids[x])) == len(np.unique(labels))  # one id per segment
    assert not set(np.unique(ids[0])[1:]) & set(np.unique(ids[8])[1:])


# ---------------------------------------------------------------------------- process()
@pytest.fixture(scope="module")
def sweep(sample, tmp_path_factory):
    """enumerate_parameters() + process() for the default bias grid, other values from BASE.

    One worker keeps the CPU cost down; the CLI comparison runs with two, so it also shows
    that the number of workers does not change the result."""
    identifier, _, _, offsets = sample
    post_processor = WatershedPostProcessor(
        offsets, threshold_values=[BASE["threshold"]], sigma_values=[BASE["sigma"]],
        min_size_values=[BASE["min_size"]], context_values=[BASE["context"]],
    )
    post_processor.set_prediction(identifier)
    container = tmp_path_factory.mktemp("sweep") / "validation.zarr"
    results = []
    for parameters in post_processor.enumerate_parameters():
        output = post_processor.process(
            parameters, LocalArrayIdentifier(container, f"output/{parameters.id}"),
            num_workers=1, block_size=BLOCK,
        )
        results.append((parameters, output))
    return post_processor, results


@pytest.mark.slow
def test_process_returns_the_output_array(sweep):
    _, results = sweep
    assert [p.bias for p, _ in results] == list(DEFAULT_BIAS_VALUES)
    parameters, output = results[2]
    assert isinstance(output, ZarrArray) and output.dataset == "output/2"
    assert output.voxel_size == VOXEL_SIZE and output.roi == Roi((0, 0, 0), (48, 64, 64))
    assert output.axes == ["z", "y", "x"] and output.dtype == np.uint32
    stored = WatershedParameters.model_validate(output.attrs[PARAMETERS_ATTR])
    assert stored.context == [3, 9, 9] and stored.bias == 0.5 and stored.min_size == 20


@pytest.mark.slow
def test_process_equals_the_cli(sample, sweep, tmp_path):
    identifier, _, _, _ = sample
    parameters, output = sweep[1][2]
    assert parameters.bias == 0.5
    cli_output = tmp_path / "cli.zarr" / "labels"
    done = subprocess.run(
        [sys.executable, "-m", "napari_mutex_watershed.cli", "segment", str(identifier.path),
         str(cli_output), "--bias", "0.5", "--threshold", str(BASE["threshold"]),
         "--sigma", str(BASE["sigma"]), "--min-size", str(BASE["min_size"]),
         "--context", "3", "9", "9",  # BASE["context"] (6, 9, 9) nm / (2, 1, 1) nm
         "--block-size", *map(str, BLOCK), "--workers", "2", "--progress", "none"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    expected = zarr.open_array(str(cli_output / "0"), mode="r")  # OME-Zarr labels, level 0
    assert expected.dtype == output.dtype
    assert np.array_equal(expected[:], output[output.roi])


def test_process_replaces_an_output_whose_prediction_was_written_anew(tmp_path):
    """The same parameters and paths after a new prediction (other values, another offset)
    give the new labels, not the earlier run's."""
    identifier = LocalArrayIdentifier(tmp_path / "run.zarr", "prediction")
    output = LocalArrayIdentifier(tmp_path / "run.zarr", "output")
    labels = []
    for seed, offset in ((1, (0, 0, 0)), (2, (8, 4, 4))):
        affinities, _, offsets = sample_volume((8, 32, 32), seed=seed)
        write_affinities(identifier.path, affinities, offsets, voxel_size=VOXEL_SIZE,
                         offset=offset, overwrite=True)
        post_processor = WatershedPostProcessor(offsets)
        post_processor.set_prediction(identifier)
        parameters = list(post_processor.enumerate_parameters())[2]
        result = post_processor.process(parameters, output, num_workers=1)
        assert tuple(result.roi.offset) == offset
        expected = segment(zarr.open_array(str(identifier.path))[...],
                           post_processor.watershed_parameters(parameters))
        np.testing.assert_array_equal(result[result.roi], expected)
        labels.append(expected)
    assert not np.array_equal(*labels)


def test_process_replaces_only_its_own_output_and_takes_paths(tmp_path):
    """A group holding an earlier output and the user's own array is not the output's to
    replace; a path works as an identifier (DaCapo's examples), one without a dataset is
    refused before anything is written; a 2D prediction gets a 2D default block."""
    container = tmp_path / "run.zarr"
    for shape in ((32, 32), (8, 32, 32)):
        affinities, _, offsets = sample_volume(shape, seed=1)
        prediction = f"{container}/prediction{len(shape)}d"
        write_affinities(prediction, affinities, offsets)
        post_processor = WatershedPostProcessor(offsets)
        post_processor.set_prediction(prediction)  # a path
        parameters = list(post_processor.enumerate_parameters())[2]
        output = post_processor.process(parameters, f"{container}/results{len(shape)}d",
                                        num_workers=1)
        np.testing.assert_array_equal(output[output.roi], segment(
            affinities, post_processor.watershed_parameters(parameters)))
    # an array put inside the output (its labels group): the output is no longer ours alone
    mine = zarr.open_group(str(container / "results3d")).create_array(
        "proofread", data=np.full((8, 32, 32), 42, np.uint32))
    before = sorted(p.name for p in (container / "results3d").iterdir())
    with pytest.raises(UnsafeOutputError, match="holds proofread beside its levels"):
        post_processor.process(parameters, LocalArrayIdentifier(container, "results3d"))
    reversed_offsets = WatershedPostProcessor([o[::-1] for o in offsets])
    with pytest.warns(UserWarning, match="stores the offsets .* but the post-processor was "
                      "given"):
        reversed_offsets.set_prediction(prediction)
    # offsets stored as one flat list: the given ones are used, with a warning (a TypeError)
    from napari_mutex_watershed.storage.paths import update_attributes

    update_attributes(prediction, {"offsets": [v for o in offsets for v in o]})
    with pytest.warns(UserWarning, match="is not a list of integer vectors: .*the "
                      "post-processor's offsets are used"):
        post_processor.set_prediction(prediction)
    # ... and by the blockwise worker (a TypeError there), refused when none are given
    from napari_mutex_watershed.dacapo.watershed_worker import resolve_parameters

    array = ZarrArray.open_from_array_identifier(LocalArrayIdentifier.of(prediction,
                                                                         "prediction"))
    assert resolve_parameters(parameters, array).offsets == list(offsets)
    with pytest.raises(InvalidInputError, match="is not a list of integer vectors.*give the "
                       "offsets instead"):
        resolve_parameters(None, array)
    with pytest.raises(UsageError, match="names no dataset"):
        post_processor.process(parameters, LocalArrayIdentifier(tmp_path / "e.zarr", ""))
    with pytest.raises(InvalidInputError, match=r"block size must be 3 integers >= 1, got "
                       r"\(32.9, 64, 64\)"):  # (it ran with 32: truncated)
        post_processor.process(parameters, tmp_path / "e.zarr/out", block_size=(32.9, 64, 64))
    assert sorted(p.name for p in (container / "results3d").iterdir()) == before
    assert np.all(mine[...] == 42) and not (tmp_path / "e.zarr").exists()


@pytest.mark.slow
def test_process_takes_a_mask_and_seeds(sample, tmp_path):
    identifier, _, truth, offsets = sample
    mask = np.ones(truth.shape, np.uint8)
    mask[:, :, 48:] = 0
    seeds = np.zeros(truth.shape, np.uint32)
    seeds[2:22, 30, 30] = 77  # through both blocks along z
    write_labels(tmp_path / "g.zarr/mask", mask, voxel_size=VOXEL_SIZE)
    write_labels(tmp_path / "g.zarr/seeds", seeds, voxel_size=VOXEL_SIZE)
    write_labels(tmp_path / "g.zarr/other_grid", mask)  # voxel size (1, 1, 1)
    post_processor = WatershedPostProcessor(offsets, bias_values=[0.5],
                                            context_values=[BASE["context"]])
    post_processor.set_prediction(identifier)
    parameters = next(iter(post_processor.enumerate_parameters()))
    output = post_processor.process(
        parameters, LocalArrayIdentifier(tmp_path / "o.zarr", "labels"), num_workers=2,
        block_size=BLOCK, mask_array_identifier=LocalArrayIdentifier(tmp_path / "g.zarr", "mask"),
        seeds_array_identifier=LocalArrayIdentifier(tmp_path / "g.zarr", "seeds"))
    labels = output[output.roi]
    assert not labels[mask == 0].any() and labels[mask > 0].any()
    assert set(np.unique(labels[seeds == 77])) == {77}
    with pytest.raises(InvalidInputError, match="must share one voxel grid"):
        post_processor.process(
            parameters, LocalArrayIdentifier(tmp_path / "o2.zarr", "labels"),
            mask_array_identifier=LocalArrayIdentifier(tmp_path / "g.zarr", "other_grid"))


@pytest.mark.slow
def test_validation_picks_the_bias_with_the_lowest_adapted_rand_error(sample, sweep):
    _, _, truth, _ = sample
    _, results = sweep
    scores = {p.id: adapted_rand_error(truth, output[output.roi])[0] for p, output in results}
    assert len(set(np.round(list(scores.values()), 6))) == len(scores)  # every bias differs
    best = min(results, key=lambda result: scores[result[0].id])[0]  # DaCapo's selection
    assert best.id == int(np.argmin([scores[i] for i in range(len(scores))]))
    assert scores[best.id] < 0.1  # the best bias segments the sample well
    assert max(scores.values()) > 2 * scores[best.id]  # and the choice matters


@pytest.mark.parametrize("change", [
    {"threshold": 0.7}, {"sigma": 1.5}, {"min_size": 500}, {"bias": 0.75},
])
def test_every_parameter_changes_what_the_engine_runs(sample, change):
    """What process() runs is ``watershed_parameters`` (test_process_equals_the_cli), so a
    value that changes the engine's result changes process()'s result."""
    identifier, affinities, _, offsets = sample
    post_processor = WatershedPostProcessor(offsets)
    post_processor.set_prediction(identifier)
    base = WatershedPostProcessorParameters(**BASE, bias=0.5)
    changed = WatershedPostProcessorParameters(**{**base.model_dump(), **change})
    before = segment(affinities, post_processor.watershed_parameters(base))
    after = segment(affinities, post_processor.watershed_parameters(changed))
    assert not np.array_equal(before, after)


@pytest.mark.slow
def test_context_and_bias_change_the_result_of_process(sweep, tmp_path):
    post_processor, results = sweep
    base, base_output = results[2]
    expected = base_output[base_output.roi]
    assert not np.array_equal(results[3][1][base_output.roi], expected)  # bias 0.75 vs 0.5
    # context only matters blockwise: a smaller halo changes where blocks disagree
    smaller = WatershedPostProcessorParameters(**{**base.model_dump(), "context": (2, 2, 2)})
    output = post_processor.process(
        smaller, LocalArrayIdentifier(tmp_path / "v.zarr", "out"), num_workers=1, block_size=BLOCK
    )
    assert post_processor.watershed_parameters(smaller).context == [1, 2, 2]
    assert not np.array_equal(output[output.roi], expected)


# ---------------------------------------------------------------------------- segment_blockwise
CUSTOM_WORKER = textwrap.dedent('''
    import os
    import time
    from pathlib import Path

    from napari_mutex_watershed.dacapo import ZarrArray

    read_write_conflict = False

    def name(block):
        return "_".join(str(o) for o in block.write_roi.offset)

    def init_callback_fn(output, marker_dir, value, scale=1, fail_always=None, slow=None):
        Path(marker_dir, "init").write_text(f"{value} {scale}")

    def check_function(block, output, marker_dir, value, scale=1, fail_always=None, slow=None):
        return Path(marker_dir, "done_" + name(block)).exists()

    def spawn_worker(output, marker_dir, value, scale=1, fail_always=None, slow=None):
        return {"array": ZarrArray.open_from_array_identifier(output), "pid": os.getpid()}

    def start_worker(block, output, marker_dir, value, scale=1, fail_always=None, slow=None, *,
                     array, pid):
        assert pid == os.getpid()  # spawn_worker ran in this very process
        with Path(marker_dir, name(block)).open("a") as attempts:
            attempts.write(__file__ + "\\n")
        tries = len(Path(marker_dir, name(block)).read_text().splitlines())
        first_try_of_0_0_8 = fail_always is None and name(block) == "0_0_8" and tries == 1
        if first_try_of_0_0_8 or name(block) == fail_always:
            raise RuntimeError("this block fails on purpose")
        if name(block) == slow and tries == 1:
            time.sleep(60)  # longer than the timeout: killed, then retried
        array[block.write_roi] = value * scale
''')


@pytest.fixture
def custom_worker(tmp_path):
    path = tmp_path / "custom_worker.py"
    path.write_text(CUSTOM_WORKER)
    markers = tmp_path / "markers"
    markers.mkdir()
    output = LocalArrayIdentifier(tmp_path / "c.zarr", "out")
    total_roi = Roi((0, 0, 0), (8, 8, 16))
    ZarrArray.create_from_array_identifier(output, ["z", "y", "x"], total_roi, None,
                                           Coordinate(1, 1, 1), np.uint8,
                                           write_size=Coordinate(4, 8, 8))  # one chunk per block
    return path, markers, output, total_roi


def _attempts(markers: Path) -> dict[str, list[str]]:
    return {p.name: p.read_text().splitlines() for p in markers.iterdir()
            if p.name[0].isdigit()}


@pytest.mark.slow
def test_segment_blockwise_retries_a_failing_block_and_passes_arguments(custom_worker):
    path, markers, output, total_roi = custom_worker
    (markers / "done_4_0_0").touch()  # check_function says this block is done already
    block = Roi((0, 0, 0), (4, 8, 8))
    ok = segment_blockwise(path, Coordinate(0, 0, 0), total_roi, block, block, 2, 2, None,
                           None, False, output, str(markers), 7, scale=3)
    assert ok is True
    assert (markers / "init").read_text() == "7 3"  # init_callback_fn got args and kwargs
    attempts = _attempts(markers)
    assert sorted(attempts) == ["0_0_0", "0_0_8", "4_0_8"]  # 4_0_0 skipped by check_function
    assert len(attempts["0_0_8"]) == 2 and len(attempts["0_0_0"]) == 1  # failed once, retried
    result = ZarrArray.open_from_array_identifier(output, mode="r")[total_roi]
    assert np.all(result[:4] == 21) and np.all(result[4:, :, 8:] == 21)  # value * scale
    assert np.all(result[4:, :, :8] == 0)  # the skipped block
    # workers ran a copy of the file in a temporary directory, removed afterwards
    copy = Path(attempts["0_0_0"][0])
    assert copy.name == path.name and copy != path and not copy.parent.exists()


@pytest.mark.slow
def test_segment_blockwise_reports_a_failing_block_and_retries_a_slow_one(custom_worker):
    path, markers, output, total_roi = custom_worker
    block = Roi((0, 0, 0), (8, 8, 8))
    # timeout 10 s: far below the slow block's 60 s, far above a retry's time on a busy machine
    ok = segment_blockwise(path, Coordinate(0, 0, 0), total_roi, block, block, 2, 1, 10,
                           None, True, output, str(markers), 1, fail_always="0_0_0",
                           slow="0_0_8")
    assert ok is False
    attempts = _attempts(markers)
    assert len(attempts["0_0_0"]) == 2  # the first try and max_retries=1 retry, both failed
    assert len(attempts["0_0_8"]) == 2  # killed after the timeout, then done
    result = ZarrArray.open_from_array_identifier(output, mode="r")[total_roi]
    assert np.all(result[:, :, 8:] == 1) and np.all(result[:, :, :8] == 0)
    kept = Path(attempts["0_0_0"][0]).parent  # keep_tmpdir=True keeps the copy and config
    assert (kept / path.name).read_text() == CUSTOM_WORKER and (kept / "config.pkl").exists()
    shutil.rmtree(kept)


def test_segment_blockwise_refuses_a_file_without_the_worker_functions(tmp_path):
    path = tmp_path / "incomplete.py"
    path.write_text("def start_worker(block):\n    pass\n")
    roi = Roi((0, 0), (4, 4))
    with pytest.raises(InvalidInputError, match="missing: spawn_worker"):
        segment_blockwise(path, Coordinate(0, 0), roi, roi, roi)
    with pytest.raises(InvalidInputError, match="does not exist"):
        segment_blockwise(tmp_path / "missing.py", Coordinate(0, 0), roi, roi, roi)


def test_outputs_whose_chunks_straddle_blocks_are_refused(tmp_path):
    identifier = LocalArrayIdentifier(tmp_path / "s.zarr", "out")
    total = Roi((0, 0, 0), (8, 16, 16))
    array = ZarrArray.create_from_array_identifier(identifier, ["z", "y", "x"], total, None,
                                                   Coordinate(1, 1, 1), np.uint8)  # one chunk
    require_block_aligned_chunks(array, total, Roi((0, 0, 0), (8, 16, 16)))  # one block: fine
    with pytest.raises(InvalidInputError, match="write_size"):
        require_block_aligned_chunks(array, total, Roi((0, 0, 0), (8, 8, 8)))
    array = ZarrArray.create_from_array_identifier(identifier, ["z", "y", "x"], total, None,
                                                   Coordinate(1, 1, 1), np.uint8,
                                                   write_size=(8, 8, 8), overwrite=True)
    require_block_aligned_chunks(array, total, Roi((0, 0, 0), (8, 8, 8)))
    with pytest.raises(InvalidInputError):  # blocks starting between chunk borders
        require_block_aligned_chunks(array, Roi((0, 4, 4), (8, 12, 12)), Roi((0, 0, 0), (8, 8, 8)))


@pytest.mark.slow
def test_ready_made_watershed_worker(sample, tmp_path):
    identifier, affinities, _, offsets = sample
    output = LocalArrayIdentifier(tmp_path / "w.zarr", "fragments")
    parameters = WatershedPostProcessorParameters(bias=0.5, context=(6, 9, 9))
    context = Coordinate(6, 9, 9)
    write = Roi((0, 0, 0), (24, 32, 32))  # world units: 12 x 32 x 32 voxels
    total = ZarrArray.open_from_array_identifier(identifier, mode="r").roi
    ok = segment_blockwise(WATERSHED_WORKER, context, total, write.grow(context, context), write,
                           num_workers=2, input_array_identifier=identifier,
                           output_array_identifier=output, parameters=parameters)
    assert ok
    result = ZarrArray.open_from_array_identifier(output, mode="r")
    assert result.dtype == np.uint64 and result.roi == total
    labels = result[total]
    blocks = [labels[z:z + 12, y:y + 32, x:x + 32]
              for z in (0, 12) for y in (0, 32) for x in (0, 32)]
    ids = [set(np.unique(b)) - {0} for b in blocks]
    assert all(ids) and sum(map(len, ids)) == len(set().union(*ids))  # no id in two blocks
    # a block equals segment() of its read region, cropped (up to the id values)
    expected = segment(affinities[:, 9:24, 23:64, 23:64],  # read ROI of the block at (12, 32, 32)
                       WatershedParameters(offsets=offsets, bias=0.5))[3:, 9:, 9:]
    got = labels[12:, 32:, 32:]
    assert adapted_rand_error(expected, got, ignore_labels=())[0] == 0
    assert np.array_equal(expected == 0, got == 0)
    assert WatershedParameters.model_validate(result.attrs[PARAMETERS_ATTR]).bias == 0.5


@pytest.mark.slow
def test_the_watershed_worker_reads_whole_voxels_of_any_context(sample, tmp_path):
    """A context off the voxel grid (5 nm on 2 nm voxels) reads whole voxels (6 nm), as
    every block did fail before."""
    identifier, affinities, _, offsets = sample
    output = LocalArrayIdentifier(tmp_path / "w.zarr", "fragments")
    context, write = Coordinate(5, 9, 9), Roi((0, 0, 0), (24, 32, 32))
    total = ZarrArray.open_from_array_identifier(identifier, mode="r").roi
    assert segment_blockwise(WATERSHED_WORKER, context, total, write.grow(context, context),
                             write, num_workers=2, input_array_identifier=identifier,
                             output_array_identifier=output, parameters={"bias": 0.5})
    labels = ZarrArray.open_from_array_identifier(output, mode="r")[total]
    expected = segment(affinities[:, 9:24, 23:64, 23:64],  # 6 nm = 3 voxels of context in z
                       WatershedParameters(offsets=offsets, bias=0.5))[3:, 9:, 9:]
    assert adapted_rand_error(expected, labels[12:, 32:, 32:], ignore_labels=())[0] == 0


def test_segment_blockwise_refuses_bad_arguments_before_any_worker(sample, tmp_path):
    identifier, _, _, _ = sample
    output = LocalArrayIdentifier(tmp_path / "w.zarr", "fragments")
    total = ZarrArray.open_from_array_identifier(identifier, mode="r").roi
    context, write = Coordinate(6, 9, 9), Roi((0, 0, 0), (24, 32, 32))
    arguments = dict(input_array_identifier=identifier, output_array_identifier=output)

    def run(context=context, total=total, **options):
        return segment_blockwise(WATERSHED_WORKER, context, total, write.grow((6, 9, 9),
                                 (6, 9, 9)), write, **{"num_workers": 1, **arguments, **options})

    for options, error, message in (
            ({"max_retries": -1}, InvalidInputError, "max_retries must be at least 0"),
            ({"timeout": 0}, InvalidInputError, "the timeout must be a positive number"),
            ({"timeout": True}, InvalidInputError, "the timeout must be a positive number"),
            ({"num_workers": "2"}, UsageError, "num_workers must be an integer"),
            ({"context": Coordinate(9, 9)}, InvalidInputError, "must have as many axes"),
            ({"total": total.grow((48, 0, 0), (0, 0, 0))}, InvalidInputError,
             "is not inside the input"),
            ({"parameters": {"biass": 0.5}}, InvalidInputError,
             "biass: not a parameter \\(did you mean bias\\?\\)")):
        with pytest.raises(error, match=message):
            run(**options)
    assert not output.path.exists()


@pytest.mark.slow
def test_ready_made_watershed_worker_takes_a_mask(sample, tmp_path):
    identifier, affinities, truth, offsets = sample
    mask = np.ones(truth.shape, np.uint8)
    mask[:, 20:50, 10:40] = 0  # across all four blocks in y and x
    write_labels(tmp_path / "m.zarr/mask", mask, voxel_size=VOXEL_SIZE)
    write_labels(tmp_path / "m.zarr/other_grid", mask)
    output = LocalArrayIdentifier(tmp_path / "w.zarr", "fragments")
    context, write = Coordinate(6, 9, 9), Roi((0, 0, 0), (24, 32, 32))
    total = ZarrArray.open_from_array_identifier(identifier, mode="r").roi
    arguments = {"input_array_identifier": identifier, "output_array_identifier": output,
                 "parameters": WatershedPostProcessorParameters(bias=0.5, context=context)}
    ok = segment_blockwise(WATERSHED_WORKER, context, total, write.grow(context, context), write,
                           num_workers=2, **arguments,
                           mask_array_identifier=LocalArrayIdentifier(tmp_path / "m.zarr", "mask"))
    assert ok
    labels = ZarrArray.open_from_array_identifier(output, mode="r")[total]
    assert not labels[mask == 0].any() and labels[mask > 0].any()
    expected = segment(affinities[:, 9:24, 23:64, 23:64], WatershedParameters(offsets=offsets,
                       bias=0.5), mask=mask[9:24, 23:64, 23:64] > 0)[3:, 9:, 9:]
    assert adapted_rand_error(expected, labels[12:, 32:, 32:], ignore_labels=())[0] == 0
    with pytest.raises(InvalidInputError, match="not on the voxel grid"):
        segment_blockwise(WATERSHED_WORKER, context, total, write.grow(context, context), write,
                          **arguments, mask_array_identifier=LocalArrayIdentifier(
                              tmp_path / "m.zarr", "other_grid"))


@pytest.mark.slow
def test_threshold_worker_example(sample, tmp_path):
    identifier, affinities, _, _ = sample
    output = LocalArrayIdentifier(tmp_path / "t.zarr", "components")
    total = ZarrArray.open_from_array_identifier(identifier, mode="r").roi
    block = Roi((0, 0, 0), (24, 64, 32))  # world units: 12 x 64 x 32 voxels
    assert segment_blockwise(THRESHOLD_WORKER, Coordinate(0, 0, 0), total, block, block, 2,
                             input_array_identifier=identifier, output_array_identifier=output,
                             threshold=0.7)
    labels = ZarrArray.open_from_array_identifier(output, mode="r")[total]
    foreground = affinities.mean(axis=0) > 0.7
    assert np.array_equal(labels > 0, foreground)
    for z in (0, 12):
        for x in (0, 32):
            got = labels[z:z + 12, :, x:x + 32]
            expected, n = ndimage.label(foreground[z:z + 12, :, x:x + 32])
            assert len(np.unique(got)) == n + 1
            assert adapted_rand_error(expected, got, ignore_labels=())[0] == 0
