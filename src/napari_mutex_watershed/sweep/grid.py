"""The settings of a sweep: values and ranges as typed, and the grid they make (bias
outermost, so the order is fixed and the first setting varies slowest)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..parameters import WatershedParameters

#: DaCapo's watershed post-processor swept these uniform biases.
DEFAULT_BIASES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
#: The parameters a sweep can vary, in grid order (the first varies slowest).
SWEPT = ("bias", "threshold", "min_size")
#: More settings than this is almost certainly a typo in a range (and as many layers).
MAX_SETTINGS = 100


# ---------------------------------------------------------------------------- the grid
def value_range(start: float, stop: float, step: float) -> list[float]:
    """start, start + step, ... up to and including ``stop`` (within rounding)."""
    if step <= 0:
        raise ValueError(f"a range needs a positive step, got {step:g}")
    if stop < start:
        raise ValueError(f"a range needs start <= stop, got {start:g}:{stop:g}")
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    if count > MAX_SETTINGS:
        raise ValueError(f"{start:g}:{stop:g}:{step:g} has {count} values (at most "
                         f"{MAX_SETTINGS})")
    decimals = max(_decimals(start), _decimals(step))
    return [round(start + i * step, decimals) for i in range(count)]


def _decimals(value: float) -> int:
    text = f"{value:.10f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def parse_values(values, kind: type = float) -> list | None:
    """Values to sweep from text or a sequence; None or empty: not swept.

    Items are numbers or ranges ``start:stop:step`` (stop included), separated by commas or
    spaces: ``"0.1, 0.25, 0.5"``, ``"0.1:0.9:0.2"``, ``["0.2:0.4:0.1", "0.8"]``. Repeated
    values are dropped, the order is kept.
    """
    if values is None:
        return None
    if isinstance(values, str):
        items = values.replace(",", " ").replace(";", " ").split()
    else:
        items = [str(v) for v in values]
        items = [part for item in items for part in item.replace(",", " ").split()]
    out: list = []
    for item in items:
        try:
            parts = [float(p) for p in item.split(":")]
            if len(parts) not in (1, 3):
                raise ValueError
        except ValueError:
            raise ValueError(
                f"cannot read {item!r}: give numbers (0.1, 0.5) or a range start:stop:step"
            ) from None
        try:
            numbers = value_range(*parts) if len(parts) == 3 else parts
        except ValueError as error:
            raise ValueError(f"{item}: {error}") from None
        for number in numbers:
            if kind is int:
                if number != int(number):
                    raise ValueError(f"{item!r}: whole numbers only")
                number = int(number)
            if number not in out:
                out.append(number)
    return out or None


def format_number(value) -> str:
    """0.5 -> '0.50', 0.125 -> '0.125', 20 -> '20' (names of layers and table rows)."""
    if isinstance(value, int | np.integer):
        return str(int(value))
    value = float(value)
    return f"{value:.2f}" if round(value, 2) == value else f"{value:g}"


@dataclass(frozen=True)
class Setting:
    """One point of the grid: the swept values and the full parameters they give."""

    index: int
    values: tuple[tuple[str, float | int], ...]
    parameters: WatershedParameters

    @property
    def name(self) -> str:
        """e.g. 'bias=0.50' or 'bias=0.50 min_size=20'."""
        return " ".join(f"{key}={format_number(value)}" for key, value in self.values)

    def value(self, key: str):
        return dict(self.values).get(key)


def parameter_grid(
    base: WatershedParameters,
    bias: Sequence[float] | None = DEFAULT_BIASES,
    threshold: Sequence[float] | None = None,
    min_size: Sequence[int] | None = None,
) -> list[Setting]:
    """Every combination of the given values on top of ``base`` (None/empty: base's value).

    The bias is uniform: ``WatershedParameters.bias = value`` for every offset. Order: bias
    outermost, then threshold, then minimum size, each in the order given.
    """
    axes = [
        (key, list(dict.fromkeys(values)))
        for key, values in (("bias", bias), ("threshold", threshold), ("min_size", min_size))
        if values is not None and len(values) > 0
    ]
    if not axes:
        raise ValueError("nothing to sweep: give values for bias, threshold or min size")
    count = math.prod(len(values) for _, values in axes)
    if count > MAX_SETTINGS:
        raise ValueError(f"{count} settings: at most {MAX_SETTINGS} per sweep")
    settings = []
    for index, combination in enumerate(itertools.product(*(v for _, v in axes))):
        values = tuple(
            (key, int(value) if key == "min_size" else float(value))
            for (key, _), value in zip(axes, combination)
        )
        update = dict(values)
        try:
            parameters = WatershedParameters.model_validate(
                {**base.model_dump(), **update}
            )
        except Exception as error:  # pydantic ValidationError: say which value
            problem = error.errors()[0]["msg"] if hasattr(error, "errors") else str(error)
            shown = ", ".join(f"{k}={format_number(v)}" for k, v in values)
            raise ValueError(f"{shown}: {problem}") from None
        settings.append(Setting(index, values, parameters))
    return settings


