"""The project's own error types: what a user sees instead of a library's traceback.

Every refusal is one of these, with a message that fits on one line and says what to do.
Fronts (CLI, widget) match them by type. A cancel is not an error: ``Cancelled`` is a
KeyboardInterrupt.
"""

import re


class MutexWatershedError(Exception):
    """Base of every error this package raises on purpose (a cancel aside: ``Cancelled``)."""


class UsageError(MutexWatershedError, TypeError):
    """A function of the Python API was called with the wrong types or an unknown keyword."""


class NotReadyError(UsageError, RuntimeError):
    """Called before what it needs (e.g. ``process`` before ``set_prediction``)."""


class InvalidInputError(MutexWatershedError, ValueError):
    """The data handed in cannot be segmented as it is (NaN, wrong shape, wrong dtype, ...)."""


class InvalidValuesError(InvalidInputError):
    """Affinity values that cannot be segmented (NaN, inf, floats outside 0..1), at a voxel.

    ``voxel`` is relative to the array that was checked; ``at(origin, scale, translate)``
    says where that array starts in the whole layer or input (a crop, a block) and, given
    the layer's scale (or whole linear map, ``world_position``) and translate, the message
    adds the voxel's world position.
    """

    def __init__(self, problem: str, channel: int, voxel, advice: str = "", origin=None,
                 scale=None, translate=None):
        self.problem = problem
        self.channel = int(channel)
        self.voxel = tuple(int(v) for v in voxel)
        self.advice = advice
        self.origin = tuple(int(v) for v in origin) if origin is not None else None
        self.scale = _linear_map(scale) if scale is not None else None
        self.translate = tuple(float(v) for v in translate) if translate is not None else None
        where = self.voxel if self.origin is None else tuple(
            v + o for v, o in zip(self.voxel, self.origin))
        place = f"{VOXEL_AT}{where}"
        if self.scale is not None:
            place += world_position(where, self.scale, self.translate)
        super().__init__(f"{problem} in channel {self.channel}, {place}"
                         + (f"; {advice}" if advice else ""))

    def at(self, origin, scale=None, translate=None) -> "InvalidValuesError":
        """The same error with voxels counted from ``origin`` (the checked array's start)
        and, given ``scale`` (and ``translate``), their world position."""
        base = self.origin or (0,) * len(self.voxel)
        return InvalidValuesError(self.problem, self.channel, self.voxel, self.advice,
                                  tuple(int(b) + int(o) for b, o in zip(base, origin)),
                                  scale if scale is not None else self.scale,
                                  translate if scale is not None else self.translate)

    def __reduce__(self):  # pickled whole (the preview worker sends it to the widget)
        return InvalidValuesError, (self.problem, self.channel, self.voxel, self.advice,
                                    self.origin, self.scale, self.translate)


#: How a message names a voxel (``InvalidValuesError``); ``with_world_position`` finds it.
VOXEL_AT = "first at voxel "
_VOXEL = re.compile(re.escape(VOXEL_AT) + r"\((-?\d+(?:, -?\d+)*)\)(?!, world)")


def _linear_map(scale) -> tuple:
    """A scale per axis as floats, or a linear map as rows of floats."""
    if all(hasattr(row, "__len__") for row in scale):
        return tuple(tuple(float(v) for v in row) for row in scale)
    return tuple(float(v) for v in scale)


def world_position(voxel, scale, translate=None) -> str:
    """``", world position (...)"``: where ``voxel`` lies in napari's world coordinates:
    data index times ``scale`` plus ``translate``, where ``scale`` is a scale per axis or
    the whole linear map (rows) of a rotated, sheared or affine-transformed layer."""
    translate = translate if translate is not None else (0.0,) * len(voxel)
    scale = _linear_map(scale)
    rows = scale if scale and isinstance(scale[0], tuple) else [
        [s if i == j else 0.0 for j in range(len(voxel))] for i, s in enumerate(scale)]
    world = ", ".join(f"{sum(r * v for r, v in zip(row, voxel)) + t:g}"
                      for row, t in zip(rows, translate))
    return f", world position ({world})"


def with_world_position(message: str, scale, translate=None) -> str:
    """``message`` (a job's text) with the world position after each voxel it names in the
    layer's own indices."""
    return _VOXEL.sub(lambda m: m.group(0) + world_position(
        [int(v) for v in m.group(1).split(",")], scale, translate), message)


class NotVisible(MutexWatershedError, ValueError):
    """The layer is not in view (its slice is off the data, or the view misses it): the
    preview has nothing to compute."""


class KernelError(MutexWatershedError, RuntimeError):
    """mwatershed itself failed (a Rust panic), converted so callers can catch it."""


class OutputExistsError(MutexWatershedError, FileExistsError):
    """Refusing to overwrite an existing output without being told to."""


class UnsafeOutputError(MutexWatershedError, FileExistsError):
    """Refusing to write where it would destroy what is not ours (the input, a foreign
    array), ``--overwrite`` or not."""


class OutputInUseError(MutexWatershedError):
    """Another run is writing this output now."""


class NoSpaceError(MutexWatershedError, OSError):
    """The disk is full (or over quota) where a run writes."""


class BlockwiseError(MutexWatershedError):
    """A blockwise run could not finish."""


class WorkerCommandError(BlockwiseError):
    """The command that launches cluster workers keeps failing before any block is done."""


class IncompleteRunError(BlockwiseError):
    """A step started before the steps it needs were finished (a damaged or foreign work
    folder)."""


class Cancelled(KeyboardInterrupt):
    """The run was stopped by a signal; finished blocks are kept for a resume. A
    KeyboardInterrupt, as Ctrl-C is in Python: a caller's ``except Exception`` (a loop over
    settings that skips failures) does not take it for a failed run and go on."""


def checked_arguments(function):
    """Turn Python's TypeError for a wrong call (unknown keyword, missing argument) into a
    UsageError that names what the function takes."""
    import functools
    import inspect

    signature = inspect.signature(function)

    @functools.wraps(function)
    def call(*args, **kwargs):
        try:
            signature.bind(*args, **kwargs)
        except TypeError as error:
            takes = ", ".join(n for n, p in signature.parameters.items()
                              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
            raise UsageError(f"{function.__name__}(): {error}; it takes: {takes}") from None
        return function(*args, **kwargs)

    return call
