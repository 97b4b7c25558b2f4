"""WatershedParameters: validation messages, derived values, JSON round trips."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from pydantic import ValidationError

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.errors import InvalidInputError
from napari_mutex_watershed.parameters import (
    DEFAULT_MIN_SIZE,
    OFFSETS_2D,
    OFFSETS_3D,
    as_parameters,
    checked_before_offsets,
    is_nearest_neighbour,
)


def test_defaults():
    p = WatershedParameters()
    assert p.offsets == OFFSETS_3D and p.ndim == 3
    assert p.bias is None and p.bias_short == 0.5 and p.bias_long == 0.7
    assert p.threshold == 0 and p.sigma == 0 and p.min_size == DEFAULT_MIN_SIZE == 20
    assert p.strides is None and not p.randomized_strides and not p.invert


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"offsets": [(1, 0, 0), (0, 0, 0)]}, "offset (0, 0, 0) is zero"),
        ({"offsets": [(1, 0, 0), (0, 1)]}, "all offsets need the same length, got lengths [2, 3]"),
        ({"offsets": []}, "at least one offset"),
        ({"offsets": [(1,), (2,)]}, "2D or 3D"),
        ({"offsets": [(1, 0), (1, 0)]}, "duplicates"),
        ({"offsets": OFFSETS_2D, "bias": [0.5, 0.5]},
         "bias has 2 values for 4 offsets: give one or 4"),
        ({"bias": 1.5}, "less than or equal to 1"),
        ({"bias_short": -0.1}, "greater than or equal to 0"),
        ({"strides": [1, 3]}, "strides must be 3 integers >= 1, got [1, 3]"),
        ({"strides": [1, 0, 3]}, "strides must be 3 integers >= 1"),
        ({"randomized_strides": True}, "randomized_strides needs strides"),
        ({"context": [4, 9]}, "context must be 3 integers >= 0, got [4, 9]"),
        ({"context": [4, -1, 9]}, "context must be 3 integers >= 0"),
        ({"channels": [0, 1]}, "channels selects 2 channels for 6 offsets"),
        ({"channels": [0, 1, 2, 3, 4, -5]}, "channel indices must be >= 0"),
        ({"sigma": 11}, "less than or equal to 10"),
        ({"min_size": -1}, "greater than or equal to 0"),
        ({"unknown": 1}, "Extra inputs are not permitted"),
    ],
)
def test_validation_messages(kwargs, message):
    with pytest.raises(ValidationError) as info:
        WatershedParameters(**kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize("values, line", [
    # of bias's two kinds (a number, a list) only the complaint about the kind given
    ({"bias": 2}, "bias: Input should be less than or equal to 1 (got 2)"),
    ({"bias": [0.5, 2, 0.5, 0.5, 3, 0.5]}, "bias[1]: Input should be less than or equal to 1 "
     "(got 2); bias[4]: Input should be less than or equal to 1 (got 3)"),
    ({"bias": "x"}, "bias: Input should be a valid number, unable to parse string as a number "
     "(got 'x')"),
    ({"bias": {}}, "bias: Input should be a valid number or a valid list (got {})"),
    ({"offsets": [(1, 0, 0), "a", "b"]}, "offsets[1]: Input should be a valid tuple (got 'a'); "
     "offsets[2]: Input should be a valid tuple (got 'b')"),
    ({"offsets": [(1.5, 0, 0)]}, "offsets[0][0]: Input should be a valid integer (got 1.5)"),
    # a model check says it all, without pydantic's "Value error, "
    ({"bias": [0.5, 0.5]}, "bias has 2 values for 6 offsets: give one or 6"),
    ({"channels": [-1]}, "channels: channel indices must be >= 0"),
    ({"biass": 0.5}, "biass: not a parameter (did you mean bias?)"),
    ({"zzz": 1}, "zzz: not a parameter"),
    ({"bias_short": 3, "sigma": -1}, "bias_short: Input should be less than or equal to 1 "
     "(got 3); sigma: Input should be greater than or equal to 0 (got -1)"),
    # (NaN was "should be less than or equal to 1 (got nan)")
    ({"bias": float("nan")}, "bias: Input should be a finite number (got nan)"),
    ({"threshold": float("nan"), "sigma": float("inf")}, "threshold: Input should be a finite "
     "number (got nan); sigma: Input should be a finite number (got inf)"),
])
def test_invalid_values_read_as_one_line(values, line):
    with pytest.raises(InvalidInputError) as info:
        as_parameters(values)
    assert str(info.value) == f"invalid parameters: {line}"


def test_values_whose_offsets_come_later_are_checked_for_all_else():
    values = {"bias": [0.4, 0.5, 0.6], "strides": [1, 2], "channels": [0, 2, 1]}
    assert checked_before_offsets(values) == values  # the counts wait for the input's offsets
    for wrong, line in [({"bias": [0.4, 2]}, "bias[1]: Input should be less than or equal"),
                        ({"strides": [1, 0]}, "strides must be integers >= 1, got [1, 0]"),
                        ({"context": [-1, 2]}, "context must be integers >= 0, got [-1, 2]"),
                        ({"biass": 1}, "biass: not a parameter")]:
        with pytest.raises(InvalidInputError, match=re.escape(line)):
            checked_before_offsets(wrong)
    with pytest.raises(InvalidInputError, match="bias has 3 values for 4 offsets"):
        # offsets named: all checked
        checked_before_offsets({"offsets": OFFSETS_2D, "bias": [0.5] * 3})


def test_offsets_of_the_input_apply_where_none_are_named():
    nearest = [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
    taken = as_parameters({"bias": [0.4, 0.5, 0.6]}, offsets=nearest)
    assert taken.offsets == nearest and taken.bias == [0.4, 0.5, 0.6]
    assert as_parameters(WatershedParameters(bias_short=0.4), offsets=nearest).offsets == nearest
    named = WatershedParameters(offsets=OFFSETS_2D)
    assert as_parameters(named, offsets=nearest) is named
    assert as_parameters({"offsets": OFFSETS_2D}, offsets=nearest).offsets == OFFSETS_2D


def test_assignment_is_validated():
    p = WatershedParameters()
    with pytest.raises(ValidationError, match="strides must be 3 integers"):
        p.strides = [2, 2]


def test_offsets_normalised_to_int_tuples():
    p = WatershedParameters(offsets=[[1, 0], [0, 1], [np.int64(0), 9]])
    assert p.offsets == [(1, 0), (0, 1), (0, 9)]
    assert all(type(v) is int for o in p.offsets for v in o)
    assert p.ndim == 2


def test_nearest_neighbour():
    assert is_nearest_neighbour((0, -1, 0)) and not is_nearest_neighbour((1, 1, 0))
    assert not is_nearest_neighbour((0, 0, 9))
    p = WatershedParameters(offsets=[(1, 0), (0, -1), (1, 1), (0, 9)])
    assert p.nearest_neighbour.tolist() == [True, True, False, False]


def test_biases_short_long_split():
    p = WatershedParameters(bias_short=0.3, bias_long=0.8)
    np.testing.assert_array_equal(p.biases(), [0.3, 0.3, 0.3, 0.8, 0.8, 0.8])
    assert p.biases().dtype == np.float64


def test_biases_uniform_bias_overrides_split():
    p = WatershedParameters(bias=0.25, bias_short=0.3, bias_long=0.8)
    np.testing.assert_array_equal(p.biases(), [0.25] * 6)


def test_biases_per_offset():
    bias = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    np.testing.assert_array_equal(WatershedParameters(bias=bias).biases(), bias)


def test_kernel_strides():
    assert WatershedParameters().kernel_strides() is None
    p = WatershedParameters(offsets=OFFSETS_2D, strides=[2, 3])
    assert p.kernel_strides() == [[1, 1], [1, 1], [2, 3], [2, 3]]
    # randomized strides are drawn by the engine, not by the kernel
    assert p.model_copy(update={"randomized_strides": True}).kernel_strides() is None


def test_context_voxels_default_doubles_short_axes_up_to_four_thirds_of_the_longest_offset():
    assert WatershedParameters().context_voxels() == (6, 12, 12)
    p = WatershedParameters(offsets=[(1, 0), (0, -1), (-4, 2)])
    assert p.context_voxels() == (6, 4)  # 2 x 4 capped at 16 / 3 rounded up; 2 x 2
    p = WatershedParameters(offsets=[(1, 0), (0, 1), (3, 0), (0, 3)])
    assert p.context_voxels() == (4, 4)
    assert WatershedParameters(context=[1, 2, 3]).context_voxels() == (1, 2, 3)


def full_parameters() -> WatershedParameters:
    return WatershedParameters(
        offsets=[(1, 0), (0, 1), (0, -5), (5, 5)],
        bias=[0.4, 0.45, 0.7, 0.75],
        bias_short=0.2,
        bias_long=0.9,
        threshold=0.3,
        sigma=1.25,
        min_size=40,
        strides=[2, 4],
        randomized_strides=True,
        seed=17,
        invert=True,
        channels=[3, 2, 1, 0],
        context=[6, 7],
    )


def test_json_round_trip():
    p = full_parameters()
    text = p.to_json()
    data = json.loads(text)
    assert data["offsets"] == [[1, 0], [0, 1], [0, -5], [5, 5]]
    assert data["seed"] == 17
    back = WatershedParameters.from_json(text)
    assert back == p
    assert back.offsets == p.offsets  # tuples again, not lists
    np.testing.assert_array_equal(back.biases(), p.biases())


def test_save_and_load(tmp_path):
    p = full_parameters()
    path = tmp_path / "parameters.json"
    p.save(path)
    assert WatershedParameters.load(path) == p
    assert WatershedParameters.load(str(path)) == p


def test_from_json_validates():
    with pytest.raises(ValidationError, match="randomized_strides needs strides"):
        WatershedParameters.from_json('{"randomized_strides": true}')


def test_defaults_round_trip():
    p = WatershedParameters()
    assert WatershedParameters.from_json(p.to_json()) == p


def test_chosen_channels_take_their_offsets_or_are_refused_in_one_line():
    """Offsets that describe every channel give the chosen ones theirs; a channel the input
    lacks or one chosen twice is named (it was 'channels selects 3 channels for 6 offsets'
    or 'offsets contain duplicates', with no offsets typed)."""
    from napari_mutex_watershed.parameters import offsets_of_channels

    assert offsets_of_channels(OFFSETS_3D, [5, 0], 6) == [OFFSETS_3D[5], OFFSETS_3D[0]]
    assert offsets_of_channels(OFFSETS_3D[:2], [5, 0], 6) == OFFSETS_3D[:2]  # typed for them
    assert offsets_of_channels(OFFSETS_3D, None, 6) == OFFSETS_3D
    with pytest.raises(InvalidInputError, match=r"^channels 7, 9 do not exist: the input has "
                       r"6 channels \(0 to 5\)$"):
        offsets_of_channels(OFFSETS_3D, [0, 7, 9], 6)
    with pytest.raises(ValidationError, match="channels contain duplicates"):
        WatershedParameters(offsets=OFFSETS_3D[:3], channels=[0, 0, 1])
