"""The one description of a mutex-watershed run.

The engine, the blockwise runner, the CLI and the napari widget all read this model, and
every result stores it as JSON, so a segmentation can always be repeated.

Sign convention: an affinity of 1 means "same object". The kernel sees ``affinity - bias``:
positive weights attract, weights <= 0 repel, strongest first. A larger bias splits more.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import InvalidInputError, UsageError

Offset = tuple[int, ...]

OFFSETS_3D: list[Offset] = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (3, 0, 0), (0, 9, 0), (0, 0, 9)]
OFFSETS_2D: list[Offset] = [(1, 0), (0, 1), (9, 0), (0, 9)]

#: Segments smaller than this become background by default: on the sample and on real neuron
#: crops it removes every single-voxel segment and brings ids from 50-290 per object to 2-7,
#: for at most +0.0024 ARAND on the neuron crops (benchmarks/choose_min_size.py,
#: docs/parameters.md).
DEFAULT_MIN_SIZE = 20

#: Above this many distinct seed ids mwatershed's quadratic seed cost becomes seconds.
MANY_SEEDS = 1000

UnitFloat = Annotated[float, Field(ge=0.0, le=1.0)]

#: Validation context of values whose offsets come later, from the input they are for.
OFFSETS_TO_COME = "offsets_to_come"


def is_nearest_neighbour(offset: Offset) -> bool:
    """Nearest-neighbour (short-range) offsets are the unit steps along one axis."""
    return sum(abs(o) for o in offset) == 1


def default_offsets(ndim: int) -> list[Offset]:
    """The offsets of affinities that neither name nor store any: the 2D set for 2D data."""
    return list(OFFSETS_2D if ndim == 2 else OFFSETS_3D)


def nearest_neighbours(ndim: int) -> list[Offset]:
    """The unit step along each axis: the offsets of affinities with one channel per axis."""
    return [tuple(int(i == axis) for i in range(ndim)) for axis in range(ndim)]


def offsets_of_channels(offsets, channels, num_channels: int):
    """The offsets of the selected ``channels`` when ``offsets`` describe every one of the
    input's ``num_channels`` (as stored with it, or a preset); else ``offsets`` as they are
    (typed for the selection; channels that are not distinct whole numbers are refused by
    the parameters). A channel the input does not have is refused here, in one line."""
    if (not isinstance(channels, list | tuple) or len(offsets) != num_channels
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                       for c in channels) or len(set(channels)) != len(channels)):
        return offsets
    check_channels_exist(channels, num_channels)
    return [offsets[c] for c in channels]


def check_channels_exist(channels, num_channels: int) -> None:
    """Refuse, in one line, chosen channels the input does not have."""
    missing = [c for c in channels or () if c >= num_channels]
    if missing:
        raise InvalidInputError(
            f"channel{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} "
            f"{'do' if len(missing) > 1 else 'does'} not exist: the input has {num_channels} "
            f"channels (0 to {num_channels - 1})")


def offsets_text(offsets) -> str:
    """Offsets as the command line takes them: ``1,0,0 0,1,0``."""
    return " ".join(",".join(str(int(v)) for v in o) for o in offsets)


class WatershedParameters(BaseModel):
    """Parameters of one mutex-watershed segmentation."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    offsets: list[Offset] = Field(
        default_factory=lambda: list(OFFSETS_3D),
        title="Offsets",
        description="One integer vector per affinity channel: channel i at voxel p is the "
        "affinity of the edge (p, p + offsets[i]).",
    )
    bias: UnitFloat | list[UnitFloat] | None = Field(
        default=None,
        title="Bias (all offsets)",
        description="One bias for every offset, or one per offset. When set it replaces "
        "the short- and long-range biases. A larger bias splits more.",
    )
    bias_short: UnitFloat = Field(
        default=0.5,
        title="Short-range bias",
        description="Bias of nearest-neighbour offsets: weight = affinity - bias. "
        "Raise it to split touching objects, lower it to merge fragments.",
    )
    bias_long: UnitFloat = Field(
        default=0.7,
        title="Long-range bias",
        description="Bias of long-range offsets. These edges mostly act as mutex "
        "(repulsive) constraints; a higher value adds more of them.",
    )
    threshold: UnitFloat = Field(
        default=0.0,
        title="Threshold",
        description="Segments whose mean nearest-neighbour affinity is below this become "
        "background (0). 0 keeps every segment.",
    )
    sigma: float = Field(
        default=0.0,
        ge=0.0,
        le=10.0,
        title="Sigma",
        description="Gaussian smoothing (in voxels) of every affinity channel before the "
        "watershed; suppresses noise-driven splits. 0 = off.",
    )
    min_size: int = Field(
        default=DEFAULT_MIN_SIZE,
        ge=0,
        title="Minimum size",
        description="Segments with fewer voxels than this become background (0); 0 keeps "
        "every segment, down to single voxels.",
    )
    strides: list[int] | None = Field(
        default=None,
        title="Long-range strides",
        description="Use only every n-th long-range edge along each axis (e.g. [1, 3, 3]): "
        "about 2x faster and often less over-segmentation. Nearest neighbours keep all.",
    )
    randomized_strides: bool = Field(
        default=False,
        title="Randomized strides",
        description="Keep each long-range edge with probability 1/prod(strides) instead of "
        "on a regular grid, drawn from `seed` so runs are reproducible.",
    )
    seed: int = Field(default=0, ge=0, title="Seed",
                      description="Random seed of randomized strides.")
    invert: bool = Field(
        default=False,
        title="Invert",
        description="The input is boundary-style (1 = boundary): use 1 - value.",
    )
    channels: list[int] | None = Field(
        default=None,
        title="Channels",
        description="Which input channels hold the offsets, in order; default: all of them, "
        "and their number must equal the number of offsets.",
    )
    context: list[int] | None = Field(
        default=None,
        title="Context",
        description="Halo in voxels read around each block of a blockwise run. "
        "Default: twice the largest offset along each axis, at most four thirds of the "
        "largest offset along any axis.",
    )

    # ------------------------------------------------------------------ validation
    @field_validator("offsets")
    @classmethod
    def _check_offsets(cls, offsets: list[Offset]) -> list[Offset]:
        if not offsets:
            raise ValueError("at least one offset is needed")
        ndims = {len(o) for o in offsets}
        if len(ndims) != 1:
            raise ValueError(f"all offsets need the same length, got lengths {sorted(ndims)}")
        ndim = ndims.pop()
        if ndim not in (2, 3):
            raise ValueError(f"offsets must be 2D or 3D vectors, got {ndim}D")
        for o in offsets:
            if not any(o):
                raise ValueError(f"offset {o} is zero: an edge from a voxel to itself")
        if len(set(offsets)) != len(offsets):
            raise ValueError("offsets contain duplicates")
        return [tuple(int(v) for v in o) for o in offsets]

    @field_validator("channels")
    @classmethod
    def _check_channels(cls, channels: list[int] | None) -> list[int] | None:
        if channels is not None and any(c < 0 for c in channels):
            raise ValueError("channel indices must be >= 0")
        if channels is not None and len(set(channels)) != len(channels):
            raise ValueError("channels contain duplicates")
        return channels

    @model_validator(mode="after")
    def _check_lengths(self, info: ValidationInfo) -> WatershedParameters:
        # ``checked_before_offsets``: the offsets (so their number and length) are not known yet
        known = not (info.context or {}).get(OFFSETS_TO_COME)
        n, ndim = len(self.offsets), len(self.offsets[0])
        if known and isinstance(self.bias, list) and len(self.bias) != n:
            raise ValueError(f"bias has {len(self.bias)} values for {n} offsets: give one or {n}")
        count = f"{ndim} " if known else ""
        if self.strides is not None:
            if (known and len(self.strides) != ndim) or any(s < 1 for s in self.strides):
                raise ValueError(f"strides must be {count}integers >= 1, got {self.strides}")
        if self.randomized_strides and self.strides is None:
            raise ValueError("randomized_strides needs strides")
        if known and self.channels is not None and len(self.channels) != n:
            raise ValueError(f"channels selects {len(self.channels)} channels for {n} offsets")
        if self.context is not None:
            if (known and len(self.context) != ndim) or any(c < 0 for c in self.context):
                raise ValueError(f"context must be {count}integers >= 0, got {self.context}")
        return self

    # ------------------------------------------------------------------ derived
    @property
    def ndim(self) -> int:
        return len(self.offsets[0])

    @property
    def nearest_neighbour(self) -> np.ndarray:
        """Boolean mask over offsets: True for short-range ones."""
        return np.array([is_nearest_neighbour(o) for o in self.offsets])

    def biases(self) -> np.ndarray:
        """The bias of each offset, resolving the short/long convenience."""
        if isinstance(self.bias, list):
            return np.asarray(self.bias, dtype=np.float64)
        if self.bias is not None:
            return np.full(len(self.offsets), self.bias, dtype=np.float64)
        return np.where(self.nearest_neighbour, self.bias_short, self.bias_long).astype(np.float64)

    def kernel_strides(self) -> list[list[int]] | None:
        """Regular strides in mwatershed's one-vector-per-offset form (None: all edges)."""
        if self.strides is None or self.randomized_strides:
            return None
        ones = [1] * self.ndim
        return [ones if nn else list(self.strides) for nn in self.nearest_neighbour]

    def context_voxels(self) -> tuple[int, ...]:
        """The halo of a blockwise block: twice the longest offset along each axis, at most
        four thirds of the longest offset overall ((6, 12, 12) for the default offsets).

        A block sees far enough behind each face not to merge what the whole-volume run keeps
        apart; the measurements behind the rule are in docs/blockwise.md, *Choosing the halo*.
        """
        if self.context is not None:
            return tuple(self.context)
        longest = np.abs(np.array(self.offsets)).max(axis=0)
        return tuple(int(v) for v in np.minimum(2 * longest, np.ceil(4 * longest.max() / 3)))

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> WatershedParameters:
        return cls.model_validate(json.loads(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path, offsets=None) -> WatershedParameters:
        """From a JSON file (or YAML, by its suffix); every problem is one InvalidInputError.
        ``offsets``: those in force, for a file that names none (``as_parameters``)."""
        return as_parameters(read_parameters_file(path), f"parameters file {path}", offsets)


def read_parameters_file(path: str | Path):
    """What a JSON file (or YAML, by its suffix) holds, not validated; a file that cannot be
    read or parsed is one InvalidInputError."""
    path = Path(path)
    if path.is_dir():
        raise InvalidInputError(f"parameters file {path} is a folder, not a file")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InvalidInputError(f"parameters file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"cannot read parameters file {path}: {error}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise InvalidInputError(f"parameters file {path} is not valid YAML: "
                                    f"{' '.join(str(error).split())}") from None
    else:
        try:
            values = json.loads(text)
        except ValueError as error:
            raise InvalidInputError(
                f"parameters file {path} is not valid JSON ({error}); YAML files need "
                "the suffix .yaml or .yml") from None
    if values is None:  # null, or an empty YAML file: not "every default"
        raise InvalidInputError(f"parameters file {path} holds no parameters")
    return values


#: pydantic's errors for a value of the wrong kind: where a field takes one of several kinds
#: (``bias``: a number or a list), the other kinds' complaints are noise.
_KIND_ERRORS = {"float_type", "int_type", "list_type", "tuple_type", "bool_type"}


def validation_problems(error: ValidationError) -> str:
    """A pydantic error as one line a user can act on: ``bias: Input should be less than or
    equal to 1 (got 2)``; of a value that may be a number or a list, only the complaint about
    the kind given; a misspelt name with the name meant."""
    import difflib

    def is_branch(e) -> bool:  # pydantic names the kind tried after the field: bias.list[...]
        return len(e["loc"]) > 1 and isinstance(e["loc"][1], str)

    errors = error.errors()
    problems = []
    for e in errors:
        field = e["loc"][0] if e["loc"] else None
        message = e["msg"].removeprefix("Value error, ")
        if is_branch(e) and e["type"] in _KIND_ERRORS:
            branches = [o for o in errors if o["loc"][:1] == e["loc"][:1] and is_branch(o)]
            if any(o["type"] not in _KIND_ERRORS for o in branches) or e is not branches[0]:
                continue  # another branch says what is wrong with the kind given, or will
            message = "Input should be " + " or ".join(
                o["msg"].removeprefix("Input should be ") for o in branches)
        where = "".join(f"[{part}]" for part in e["loc"][1:] if isinstance(part, int))
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(field), WatershedParameters.model_fields, 1)
            message = "not a parameter" + (f" (did you mean {close[0]}?)" if close else "")
        elif e["type"] != "value_error":  # a value error names the value itself
            shown = repr(e["input"])
            message = message.split(", got ")[0] + (
                f" (got {shown if len(shown) <= 40 else shown[:37] + '...'})")
        problems.append(f"{field}{where}: {message}" if field is not None else message)
    return "; ".join(dict.fromkeys(problems))


def named_fields(value) -> set[str]:
    """The fields a parameters value (None, a WatershedParameters or a dict) names."""
    if isinstance(value, WatershedParameters):
        return set(value.model_fields_set)
    return set(value or {})


def as_parameters(value, where: str = "parameters", offsets=None) -> WatershedParameters:
    """None (defaults), a WatershedParameters or a dict of its fields; anything else, or
    invalid values, is one of our errors. ``offsets``, when given, are those to use where the
    value names none (an input's own): a bias per offset or strides are checked against them."""
    _check_kind(value, where)
    if isinstance(value, WatershedParameters):
        if offsets is None or "offsets" in named_fields(value):
            return value
        value = value.model_dump(exclude_unset=True)
    values = dict(value or {})
    if offsets is not None:
        values.setdefault("offsets", offsets)
    try:
        return WatershedParameters.model_validate(values)
    except ValidationError as error:
        raise InvalidInputError(f"invalid {where}: {validation_problems(error)}") from None


def checked_before_offsets(values, where: str = "parameters"):
    """Check a dict of parameters whose offsets may come later, from the input (everything but
    what depends on the offsets: the number of biases or channels, the length of strides or
    context); return it as given (None as {}, a WatershedParameters as it is), for
    ``as_parameters`` once the offsets are known."""
    _check_kind(values, where)
    if isinstance(values, WatershedParameters):
        return values
    values = dict(values or {})
    try:
        WatershedParameters.model_validate(
            values, context={OFFSETS_TO_COME: "offsets" not in values})
    except ValidationError as error:
        raise InvalidInputError(f"invalid {where}: {validation_problems(error)}") from None
    return values


def _check_kind(value, where: str) -> None:
    if value is not None and not isinstance(value, (dict, WatershedParameters)):
        raise UsageError(
            f"{where} must be a WatershedParameters or a dict of its fields, got "
            f"{type(value).__name__}")
