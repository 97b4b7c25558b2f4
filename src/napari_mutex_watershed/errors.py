"""The project's own error types: what a user sees instead of a library's traceback.

Every refusal is one of these, with a message that fits on one line and says what to do.
Fronts (CLI, widget) match them by type.
"""


class MutexWatershedError(Exception):
    """Base of every error this package raises on purpose."""


class UsageError(MutexWatershedError, TypeError):
    """A function of the Python API was called with the wrong types or an unknown keyword."""


class NotReadyError(UsageError, RuntimeError):
    """Called before what it needs (e.g. ``process`` before ``set_prediction``)."""


class InvalidInputError(MutexWatershedError, ValueError):
    """The data handed in cannot be segmented as it is (NaN, wrong shape, wrong dtype, ...)."""


class InvalidValuesError(InvalidInputError):
    """Affinity values that cannot be segmented (NaN, inf, floats outside 0..1), at a voxel.

    ``voxel`` is relative to the array that was checked; ``at(origin)`` says where that array
    starts, so a block or a crop can report the voxel in the input's own coordinates.
    """

    def __init__(self, problem: str, channel: int, voxel, advice: str = "", origin=None):
        self.problem = problem
        self.channel = int(channel)
        self.voxel = tuple(int(v) for v in voxel)
        self.advice = advice
        self.origin = tuple(int(v) for v in origin) if origin is not None else None
        where = self.voxel if self.origin is None else tuple(
            v + o for v, o in zip(self.voxel, self.origin))
        super().__init__(f"{problem} in channel {self.channel}, first at voxel {where}"
                         + (f"; {advice}" if advice else ""))

    def at(self, origin) -> "InvalidValuesError":
        """The same error with voxels counted from ``origin`` (the checked array's start)."""
        base = self.origin or (0,) * len(self.voxel)
        return InvalidValuesError(self.problem, self.channel, self.voxel, self.advice,
                                  tuple(int(b) + int(o) for b, o in zip(base, origin)))


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


class Cancelled(MutexWatershedError):
    """The run was stopped by a signal; finished blocks are kept for a resume."""


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
