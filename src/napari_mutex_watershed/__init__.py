"""Mutex watershed on affinities: engine, blockwise runner, CLI and napari plugin.

Names are loaded on first use: the command line starts its job process before it imports
numpy, pydantic or the engine, so the two processes' imports overlap.
"""

from importlib import import_module

_WHERE = {
    "segment": "engine",
    "InvalidInputError": "errors",
    "KernelError": "errors",
    "MutexWatershedError": "errors",
    "OutputExistsError": "errors",
    "WatershedParameters": "parameters",
}

__all__ = ["InvalidInputError", "KernelError", "MutexWatershedError", "OutputExistsError",
           "WatershedParameters", "__version__", "segment"]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("napari-mutex-watershed")
        except PackageNotFoundError:  # running from a source tree
            return "0.0.0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
