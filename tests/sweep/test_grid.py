"""The grid of settings: values and ranges as typed, a fixed order."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.sweep import (
    DEFAULT_BIASES,
    parameter_grid,
    parse_values,
    value_range,
)


# ------------------------------------------------------------------------------ the grid
def test_values_and_ranges():
    assert parse_values("0.1, 0.25 0.5") == [0.1, 0.25, 0.5]
    assert parse_values("0.3:0.7:0.1") == [0.3, 0.4, 0.5, 0.6, 0.7]  # stop included
    assert parse_values(["0.2:0.4:0.1", "0.3", "0.9"]) == [0.2, 0.3, 0.4, 0.9]  # no repeats
    assert parse_values("0:100:25", int) == [0, 25, 50, 75, 100]
    assert parse_values("") is None and parse_values(None) is None
    assert value_range(0.1, 0.9, 0.2) == [0.1, 0.3, 0.5, 0.7, 0.9]
    with pytest.raises(ValueError, match="cannot read"):
        parse_values("0.1, abc")
    with pytest.raises(ValueError, match="start <= stop"):
        parse_values("0.9:0.1:0.1")
    with pytest.raises(ValueError, match="positive step"):
        parse_values("0.1:0.9:0")
    with pytest.raises(ValueError, match="whole numbers"):
        parse_values("2.5", int)


def test_grid_is_uniform_bias_in_a_fixed_order():
    base = WatershedParameters(bias_short=0.3, sigma=1.0)
    settings = parameter_grid(base)
    assert [s.value("bias") for s in settings] == list(DEFAULT_BIASES)
    assert [s.name for s in settings][:2] == ["bias=0.10", "bias=0.25"]
    for setting in settings:
        assert setting.parameters.bias == setting.value("bias")
        assert np.all(setting.parameters.biases() == setting.value("bias"))  # every offset
        assert setting.parameters.sigma == 1.0  # the rest comes from the base
    grid = parameter_grid(base, bias=[0.5, 0.7], threshold=[0.1], min_size=[0, 20])
    assert [s.name for s in grid] == [
        "bias=0.50 threshold=0.10 min_size=0", "bias=0.50 threshold=0.10 min_size=20",
        "bias=0.70 threshold=0.10 min_size=0", "bias=0.70 threshold=0.10 min_size=20",
    ]
    assert [s.index for s in grid] == [0, 1, 2, 3]
    only_size = parameter_grid(base, bias=None, min_size=[5])
    assert only_size[0].name == "min_size=5" and only_size[0].parameters.bias is None
    with pytest.raises(ValueError, match="bias=1.50"):
        parameter_grid(base, bias=[0.5, 1.5])
    with pytest.raises(ValueError, match="nothing to sweep"):
        parameter_grid(base, bias=None)
    with pytest.raises(ValueError, match="at most"):
        parameter_grid(base, bias=parse_values("0:1:0.01"), min_size=[0, 1])


# ------------------------------------------------------------------------------ scoring
