"""The Python API raises the project's own errors, one line each, for wrong calls and wrong
values; nothing reaches the user as a raw AttributeError or a library's TypeError."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mutex_watershed import segment
from napari_mutex_watershed.blockwise.launch import segment_blockwise_zarr
from napari_mutex_watershed.dacapo import WatershedPostProcessor
from napari_mutex_watershed.errors import (
    InvalidInputError,
    MutexWatershedError,
    NotReadyError,
    UsageError,
)


@pytest.fixture(scope="module")
def affinities(sample_2d):
    return sample_2d[0]


@pytest.mark.parametrize("value, match", [
    ([[0.5, 0.5]], "affinities must be an array .* got list"),
    (None, "got NoneType"),
    ("sample.zarr/affinities", "got str"),
])
def test_segment_refuses_what_is_not_an_array(value, match):
    with pytest.raises(UsageError, match=match):
        segment(value)


def test_segment_takes_parameters_as_a_dict(affinities, params_2d):
    as_dict = segment(affinities, params_2d.model_dump())
    np.testing.assert_array_equal(as_dict, segment(affinities, params_2d))


@pytest.mark.parametrize("parameters, error, match", [
    ("bias=0.5", UsageError, "parameters must be a WatershedParameters or a dict .* got str"),
    (0.5, UsageError, "got float"),
    ({"bias_short": 3}, InvalidInputError, "bias_short: Input should be less than or equal"),
    ({"biass": 0.5}, InvalidInputError, r"biass: not a parameter \(did you mean bias\?\)"),
])
def test_segment_refuses_wrong_parameters(affinities, parameters, error, match):
    with pytest.raises(error, match=match):
        segment(affinities, parameters)


def test_an_unknown_keyword_names_what_the_function_takes(affinities):
    with pytest.raises(UsageError, match=r"segment\(\): got an unexpected keyword argument "
                                         r"'bias'; it takes: affinities, parameters, mask, seeds"):
        segment(affinities, bias=0.5)
    with pytest.raises(UsageError, match="missing a required argument"):
        segment()


def test_errors_stay_catchable_as_what_they_mean():
    """Callers that caught Python's own types keep working."""
    assert issubclass(UsageError, TypeError) and issubclass(UsageError, MutexWatershedError)
    assert issubclass(InvalidInputError, ValueError)
    assert issubclass(NotReadyError, RuntimeError)


def test_blockwise_refuses_wrong_calls(tmp_path):
    with pytest.raises(UsageError, match="the input must be a path .* got NoneType"):
        segment_blockwise_zarr(None, tmp_path / "o.zarr")
    with pytest.raises(UsageError, match="unknown option.*workers"):
        segment_blockwise_zarr(tmp_path / "a.zarr", tmp_path / "o.zarr", workers=2)
    with pytest.raises(UsageError, match="got list"):
        segment_blockwise_zarr(tmp_path / "a.zarr", tmp_path / "o.zarr", [0.5],
                               supervised=False)


def test_reference_api_refuses_with_project_errors():
    with pytest.raises(InvalidInputError, match="invalid offsets"):
        WatershedPostProcessor(offsets=[(1.5, 0, 0), (0, 1, 0)])
    with pytest.raises(InvalidInputError, match="bias_values needs at least one value"):
        WatershedPostProcessor(offsets=[(1, 0, 0)], bias_values=[])
    with pytest.raises(UsageError, match="offsets must be a list"):
        WatershedPostProcessor(offsets=5)
    processor = WatershedPostProcessor(offsets=[(1, 0, 0), (0, 1, 0), (0, 0, 1)])
    with pytest.raises(UsageError, match="expected WatershedPostProcessorParameters"):
        processor.process({"bias": 0.5}, None)
    parameters = next(iter(processor.enumerate_parameters()))
    with pytest.raises(NotReadyError, match="call set_prediction"):
        processor.process(parameters, None)


def test_a_bad_value_is_placed_in_the_layer_and_the_world():
    """A crop's (or block's) voxel becomes the whole layer's index and napari's world
    position (index times scale, plus translate); the error survives a process boundary."""
    import pickle

    from napari_mutex_watershed.errors import InvalidValuesError, with_world_position

    in_crop = InvalidValuesError("affinities contain 1 NaN", 2, (1, 2, 3), "fix them")
    assert str(in_crop) == "affinities contain 1 NaN in channel 2, first at voxel (1, 2, 3); fix them"
    placed = pickle.loads(pickle.dumps(in_crop.at((10, 20, 30), (2, 1, 0.5), (8, 0, 0))))
    assert placed.voxel == (1, 2, 3) and placed.channel == 2
    assert str(placed) == ("affinities contain 1 NaN in channel 2, first at voxel (11, 22, 33), "
                           "world position (30, 22, 16.5); fix them")
    # a job's text (the full run's message) gets the same position, once
    text = f"even step, block (0, 1, 0): {in_crop.at((10, 20, 30))}"
    assert with_world_position(text, (2, 1, 0.5), (8, 0, 0)) == (
        "even step, block (0, 1, 0): affinities contain 1 NaN in channel 2, first at voxel "
        "(11, 22, 33), world position (30, 22, 16.5); fix them")
    assert with_world_position(str(placed), (2, 1, 0.5), (8, 0, 0)) == str(placed)
