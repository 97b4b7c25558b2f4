"""DaCapo's post-processor interface, and the watershed post-processor on this project's engine."""

from __future__ import annotations

import itertools
import math
import warnings
from abc import ABCMeta, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import Annotated, Any

from funlib.geometry import Coordinate
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from ..blockwise.block_shape import DEFAULT_BLOCK_SIZE as blockwise_default_block_size
from ..errors import InvalidInputError, NotReadyError, UsageError
from ..parameters import DEFAULT_MIN_SIZE, WatershedParameters, validation_problems
from ..storage.inputs import stored_offsets
from .arrays import LocalArrayIdentifier, ZarrArray

#: DaCapo's bias grid: ``enumerate_parameters`` yields one run per value.
DEFAULT_BIAS_VALUES = (0.1, 0.25, 0.5, 0.75, 0.9)
#: DaCapo's default context, in world units.
DEFAULT_CONTEXT = Coordinate((32, 32, 32))


# ---------------------------------------------------------------------------- parameters
def _to_coordinate(value) -> Coordinate:
    """Integers only: a fraction (32.5 nm) is refused, not truncated to a smaller context."""
    if isinstance(value, Coordinate):
        return value
    try:
        values = tuple(value)
        if any(float(v) != int(v) for v in values):
            raise ValueError
        return Coordinate(tuple(int(v) for v in values))
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"expected a sequence of integers, got {value!r}") from None


CoordinateField = Annotated[
    Coordinate,
    BeforeValidator(_to_coordinate),
    PlainSerializer(lambda c: [int(v) for v in c], return_type=list),
]


class PostProcessorParameters(BaseModel):
    """Base of all post-processor parameters: an ``id`` and immutable values."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True,
                              allow_inf_nan=False)

    id: int = Field(default=0, description="Index of this set among the enumerated ones.")


class WatershedPostProcessorParameters(PostProcessorParameters):
    """Parameters of the watershed post-processor. Every one of them changes the result.

    >>> p = WatershedPostProcessorParameters(offsets=[(0, 0, 1), (0, 1, 0), (1, 0, 0)],
    ...     threshold=0.5, sigma=1.0, min_size=100, bias=0.5, context=(32, 32, 32))
    >>> p.context
    (32, 32, 32)
    >>> p.watershed_parameters(voxel_size=(8, 8, 8)).context
    [4, 4, 4]
    """

    offsets: tuple[tuple[int, ...], ...] | None = Field(
        default=None,
        description="One vector per affinity channel; None: the post-processor's offsets.",
    )
    threshold: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Segments whose mean nearest-neighbour affinity is below it become 0.",
    )
    sigma: float = Field(
        default=0.0, ge=0.0, le=10.0,
        description="Gaussian smoothing of the affinities, in voxels (0: off).",
    )
    min_size: int = Field(default=DEFAULT_MIN_SIZE, ge=0,
                          description="Segments with fewer voxels become 0.")
    bias: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="One bias for every offset: weight = affinity - bias; larger splits more.",
    )
    context: CoordinateField = Field(
        default=DEFAULT_CONTEXT,
        description="Halo read around each block, in world units (rounded up to voxels).",
    )

    @field_validator("offsets")
    @classmethod
    def _check_offsets(cls, offsets):
        if offsets is None:
            return None
        try:
            checked = WatershedParameters(offsets=[tuple(o) for o in offsets]).offsets
        except ValidationError as error:
            raise ValueError("; ".join(e["msg"] for e in error.errors())) from None
        return tuple(tuple(o) for o in checked)

    @field_validator("context")
    @classmethod
    def _check_context(cls, context: Coordinate) -> Coordinate:
        if any(c < 0 for c in context):
            raise ValueError(f"context must be >= 0 along every axis, got {context}")
        return context

    @model_validator(mode="after")
    def _check_dimensions(self):
        if self.offsets is not None and len(self.context) != len(self.offsets[0]):
            raise ValueError(
                f"context {tuple(self.context)} has {len(self.context)} values but the offsets "
                f"are {len(self.offsets[0])}D"
            )
        return self

    def watershed_parameters(
        self,
        voxel_size: Sequence[int],
        offsets: Sequence[Sequence[int]] | None = None,
        channels: list[int] | None = None,
    ) -> WatershedParameters:
        """The project's parameters for a prediction with this voxel size.

        ``bias`` becomes one uniform bias, ``context`` is converted from world units to
        voxels (rounded up), ``threshold``, ``sigma`` and ``min_size`` are taken as they are.
        ``offsets`` (e.g. the post-processor's) are used when these parameters have none.
        """
        offsets = self.offsets if self.offsets is not None else offsets
        if offsets is None:
            raise InvalidInputError("no offsets: give them to the parameters or the post-processor")
        voxel_size = Coordinate(voxel_size)
        if len(voxel_size) != len(self.context):
            raise InvalidInputError(
                f"context {tuple(self.context)} and voxel size {tuple(voxel_size)} have "
                "different numbers of dimensions"
            )
        return WatershedParameters(
            offsets=[tuple(o) for o in offsets],
            bias=self.bias,
            threshold=self.threshold,
            sigma=self.sigma,
            min_size=self.min_size,
            context=[math.ceil(c / v) for c, v in zip(self.context, voxel_size)],
            channels=channels,
        )


# ---------------------------------------------------------------------------- base class
class _FrozenAfterInit(ABCMeta):
    """Instances accept attribute assignments only until their ``__init__`` returns."""

    def __call__(cls, *args, **kwargs):
        instance = super().__call__(*args, **kwargs)
        object.__setattr__(instance, "_frozen", True)
        return instance


class PostProcessor(metaclass=_FrozenAfterInit):
    """Base class of all post-processors.

    A post-processor turns a model's prediction into the final output. Its parameter sets
    come from :meth:`enumerate_parameters`; :meth:`process` applies one of them to the
    prediction given to :meth:`set_prediction`. Once created, its attributes cannot be
    changed (assignment raises ``AttributeError``); ``set_prediction`` is the one way to
    set the prediction.
    """

    _frozen = False

    def __setattr__(self, name: str, value: Any) -> None:
        if self._frozen:
            raise AttributeError(
                f"{type(self).__name__} is immutable after construction: cannot set {name!r}"
                + (" (use set_prediction)" if name.startswith("prediction") else "")
            )
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot delete {name!r}")

    def _set_prediction_attributes(self, **values: Any) -> None:
        """For ``set_prediction`` only: the documented way to change the prediction."""
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @abstractmethod
    def enumerate_parameters(self) -> Iterable[PostProcessorParameters]:
        """All parameter sets of this post-processor, with ids 0..n-1."""

    @abstractmethod
    def set_prediction(self, prediction_array_identifier: LocalArrayIdentifier) -> None:
        """Set the array holding the model's prediction."""

    @abstractmethod
    def process(
        self,
        parameters: PostProcessorParameters,
        output_array_identifier: LocalArrayIdentifier,
        num_workers: int = 16,
        block_size: Coordinate | None = None,
    ) -> ZarrArray:
        """Convert the prediction into the final output, stored at the given identifier."""


# ---------------------------------------------------------------------------- watershed
def _values(name: str, values) -> tuple:
    try:
        values = tuple(values)
    except TypeError:
        raise UsageError(f"{name} must be a list of values, got {values!r}") from None
    if not values:
        raise InvalidInputError(f"{name} needs at least one value")
    return values


class WatershedPostProcessor(PostProcessor):
    """Mutex watershed of predicted affinities, run blockwise by this project's engine.

    ``enumerate_parameters`` yields the cartesian product of the value grids, bias varying
    slowest, then threshold, sigma, min_size and context; by default only the bias varies
    (0.1, 0.25, 0.5, 0.75, 0.9 with ids 0..4), as in DaCapo.
    """

    def __init__(
        self,
        offsets: Sequence[Sequence[int]],
        *,
        bias_values: Iterable[float] = DEFAULT_BIAS_VALUES,
        threshold_values: Iterable[float] = (0.0,),
        sigma_values: Iterable[float] = (0.0,),
        min_size_values: Iterable[int] = (DEFAULT_MIN_SIZE,),
        context_values: Iterable[Sequence[int]] | None = None,
    ):
        try:
            offsets = tuple(tuple(o) for o in offsets)
        except TypeError:
            raise UsageError(
                f"offsets must be a list of integer vectors, got {offsets!r}") from None
        if not offsets:
            raise InvalidInputError("at least one offset is needed")
        # the parameters' validation of offsets (integers, same length, 2D or 3D, no zero, no
        # duplicate); fractions are refused, not truncated
        try:
            offsets = WatershedPostProcessorParameters(
                offsets=offsets, context=(0,) * len(offsets[0])
            ).offsets
        except ValidationError as error:
            raise InvalidInputError(f"invalid offsets: {validation_problems(error)}") from None
        self.offsets = offsets
        self.bias_values = _values("bias_values", bias_values)
        self.threshold_values = _values("threshold_values", threshold_values)
        self.sigma_values = _values("sigma_values", sigma_values)
        self.min_size_values = _values("min_size_values", min_size_values)
        if context_values is None:
            context_values = (Coordinate((DEFAULT_CONTEXT[0],) * len(offsets[0])),)
        self.context_values = tuple(
            Coordinate(c) for c in _values("context_values", context_values)
        )
        self.prediction_array_identifier = None
        self.prediction_array = None
        # validate the whole grid now rather than halfway through a validation loop
        for _ in self.enumerate_parameters():
            pass

    def enumerate_parameters(self) -> Iterator[WatershedPostProcessorParameters]:
        grid = itertools.product(
            self.bias_values, self.threshold_values, self.sigma_values,
            self.min_size_values, self.context_values,
        )
        for i, (bias, threshold, sigma, min_size, context) in enumerate(grid):
            yield WatershedPostProcessorParameters(
                id=i, offsets=self.offsets, bias=bias, threshold=threshold, sigma=sigma,
                min_size=min_size, context=context,
            )

    def set_prediction(self, prediction_array_identifier: LocalArrayIdentifier | str) -> None:
        prediction_array_identifier = LocalArrayIdentifier.of(prediction_array_identifier,
                                                              "prediction")
        array = ZarrArray.open_from_array_identifier(prediction_array_identifier, mode="r")
        if array.num_channels is None:
            raise InvalidInputError(
                f"{array} has no channel axis: expected affinities (c^, z, y, x)"
            )
        if array.num_channels < len(self.offsets):
            raise InvalidInputError(
                f"{array} has {array.num_channels} channels but there are "
                f"{len(self.offsets)} offsets"
            )
        value = array.attrs.get("offsets")
        stored, problem = stored_offsets(value, array) if value is not None else (None, None)
        if problem is not None:
            warnings.warn(f"{problem}: the post-processor's offsets are used", UserWarning,
                          stacklevel=2)
        elif stored and stored[:len(self.offsets)] != list(self.offsets):
            warnings.warn(  # given offsets win, as in DaCapo; a mismatch is most likely a slip
                f"{array} stores the offsets {[list(o) for o in stored]} but the "
                f"post-processor was given {[list(o) for o in self.offsets]}: the given ones "
                "are used (check the axis order)", UserWarning, stacklevel=2)
        self._set_prediction_attributes(
            prediction_array_identifier=prediction_array_identifier, prediction_array=array
        )

    def watershed_parameters(
        self, parameters: WatershedPostProcessorParameters
    ) -> WatershedParameters:
        """What ``process`` runs: ``parameters`` for the prediction's voxel size.

        The first ``len(offsets)`` channels of the prediction are used, as in DaCapo.
        """
        prediction = self._prediction()
        n = len(parameters.offsets or self.offsets)
        channels = list(range(n)) if prediction.num_channels > n else None
        return parameters.watershed_parameters(prediction.voxel_size, self.offsets, channels)

    def process(
        self,
        parameters: WatershedPostProcessorParameters,
        output_array_identifier: LocalArrayIdentifier | str,
        num_workers: int = 16,
        block_size: Coordinate | None = None,
        *,
        mask_array_identifier: LocalArrayIdentifier | None = None,
        seeds_array_identifier: LocalArrayIdentifier | None = None,
    ) -> ZarrArray:
        """Segment the prediction blockwise into ``output_array_identifier`` (uint32/uint64).

        Runs the project's blockwise engine (fragments with ``context``, stitching, relabel)
        in its own process tree with ``num_workers`` worker processes and blocks of
        ``block_size`` voxels (default 64 x 128 x 128, or 512 x 512 for a 2D prediction); a
        region of one block (up to 2^22 voxels) is segmented in this process, as a bare
        call. An existing output of this package is replaced, recomputed even for the same
        parameters. Identifiers may be paths (``"run.zarr/output"``). Returns the output
        array. The result equals the CLI's ``segment`` with the same parameters and
        ``--block-size`` (without it the CLI chooses the block from the region).
        ``mask_array_identifier`` and ``seeds_array_identifier`` name arrays on the
        prediction's voxel grid (the CLI's ``--mask`` and ``--seeds``): voxels where the mask
        is 0 stay 0, and each seed id is one object carrying that id.
        """
        from ..blockwise.launch import segment_blockwise_zarr

        if not isinstance(parameters, WatershedPostProcessorParameters):
            raise UsageError(
                f"expected WatershedPostProcessorParameters, got {type(parameters).__name__}"
            )
        watershed = self.watershed_parameters(parameters)
        output_array_identifier = LocalArrayIdentifier.of(output_array_identifier, "output")
        if not output_array_identifier.dataset.strip("/"):
            raise UsageError(f"the output {output_array_identifier.container} names no dataset: "
                             f"give one, e.g. {output_array_identifier.container}/output")
        if block_size is None:
            block_size = blockwise_default_block_size[self._prediction().voxel_size.dims]
        guides = {}
        for name, identifier in (("mask", mask_array_identifier),
                                 ("seeds", seeds_array_identifier)):
            if identifier is not None:
                identifier = LocalArrayIdentifier.of(identifier, name)
            guides[f"{name}_path"] = identifier.path if identifier is not None else None
        segment_blockwise_zarr(
            self.prediction_array_identifier.path,
            output_array_identifier.path,
            watershed,
            supervised=True,
            block_size=tuple(block_size),  # (fractions refused there, not truncated)
            num_workers=num_workers,
            overwrite=True,
            progress="none",
            **guides,
        )
        return ZarrArray.open_from_array_identifier(output_array_identifier)

    def _prediction(self) -> ZarrArray:
        if self.prediction_array is None:
            raise NotReadyError("no prediction: call set_prediction(array_identifier) first")
        return self.prediction_array
