"""Mutex watershed on affinities: engine, blockwise runner, CLI and napari plugin."""

from importlib.metadata import PackageNotFoundError, version

from .engine import segment
from .errors import InvalidInputError, KernelError, MutexWatershedError, OutputExistsError
from .parameters import WatershedParameters

try:
    __version__ = version("napari-mutex-watershed")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "InvalidInputError",
    "KernelError",
    "MutexWatershedError",
    "OutputExistsError",
    "WatershedParameters",
    "__version__",
    "segment",
]
