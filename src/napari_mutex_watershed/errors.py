"""The project's own error types: what a user sees instead of a library's traceback."""


class MutexWatershedError(Exception):
    """Base of every error this package raises on purpose."""


class InvalidInputError(MutexWatershedError, ValueError):
    """The data handed in cannot be segmented as it is (NaN, wrong shape, wrong dtype, ...)."""


class KernelError(MutexWatershedError, RuntimeError):
    """mwatershed itself failed (a Rust panic), converted so callers can catch it."""


class OutputExistsError(MutexWatershedError, FileExistsError):
    """Refusing to overwrite an existing output without being told to."""
