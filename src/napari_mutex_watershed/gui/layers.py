"""Layers as the plugin sees them: the metadata keys it sets, level 0 of any layer's data, and
adding a Labels layer without freezing napari.

napari and Qt are imported inside the functions that need them: the writer and the Qt-free
job control import this module too.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from typing import NamedTuple

from ..attributes import BLOCK_SIZE_ATTR, INPUT_ATTR

#: Set on layers the preview and the sweep make. What makes a layer theirs (never offered
#: as input, replaced freely) is ``is_transient``: napari's Duplicate Layer copies the
#: metadata, and the copy is the user's, kept to compare or to paint seeds on.
PREVIEW_KEY = "mutex_watershed_preview"
#: Set on the sweep's result layers.
SWEEP_KEY = "mutex_watershed_sweep"
#: A full run's result layer: the output it shows and the command that made it.
OUTPUT_KEY = "mutex_watershed_output"
COMMAND_KEY = "mutex_watershed_command"
#: A result's provenance under the names its output stores it.
BLOCK_SIZE_KEY = BLOCK_SIZE_ATTR
INPUT_KEY = INPUT_ATTR


def level0(data):
    """Level 0 of a layer (multiscale or not) or of layer data (a sequence of levels when
    multiscale: a list, a tuple, napari's ``MultiScaleData``), else the data itself."""
    if hasattr(data, "multiscale") and hasattr(data, "data"):  # a layer
        return data.data[0] if data.multiscale else data.data
    return data[0] if isinstance(data, Sequence) else data


#: The layers the preview and the sweep made (``PREVIEW_KEY`` in their metadata on arrival).
_TRANSIENT: weakref.WeakSet = weakref.WeakSet()


def is_transient(layer) -> bool:
    """Is ``layer`` one the preview or the sweep made (not a copy of one)?"""
    return layer in _TRANSIENT


# ---------------------------------------------------------------------------- arrival
log = logging.getLogger(__name__)
_paid_once: list[bool] = []


def _open_in_thread(data):
    """``data`` opened (called if a function) after paying, once per process, what napari's
    first Labels layer would otherwise compute on the main thread: vispy's dash patterns of
    the polygon overlay's lines (lru-cached; 30-50 ms of a first insert). An error is
    returned, not raised: napari's worker would show it as a traceback."""
    try:
        if not _paid_once:
            from vispy.visuals.line.dash_atlas import DashAtlas

            DashAtlas()
            _paid_once.append(True)
        return data() if callable(data) else data
    except Exception as error:  # noqa: BLE001 (handed to the main thread, logged there)
        return _NotOpened(error)


class _NotOpened(NamedTuple):
    error: Exception


class LabelsArrival:
    """A Labels layer on its way into a viewer, in short main-thread steps.

    ``viewer.add_labels`` does everything in one call: building the layer, napari's vispy
    visuals and layer controls, then slicing and reading the first view. That held the main
    thread 0.1-0.8 s under software OpenGL (docs/architecture.md). Here the data are opened
    in a thread (zarr metadata, dask graphs), then each of build (hidden), insert and show
    runs in its own turn of the event loop, so napari draws and handles input in between.
    Each step is recorded apart (``callback_time.excluded``) under ``record``.
    """

    def __init__(self, viewer, data, record: str, position: int | None, visible: bool,
                 then: Callable | None, failed: Callable | None, kwargs: dict):
        self.viewer = viewer
        self.record = record
        self.layer = None
        self.done = False  # the layer is in the viewer (and shown if asked), or it failed
        self.cancelled = False
        self._data, self._position, self._visible = data, position, visible
        self._then, self._failed, self._kwargs = then, failed, kwargs

    def start(self) -> None:
        from napari.qt.threading import create_worker

        worker = create_worker(_open_in_thread, self._data)
        # (a lambda, not the bound method: Qt would hold this object only weakly, and a
        # caller that keeps no reference would never see its layer)
        worker.returned.connect(lambda data: self._opened(data))
        worker.start()

    def _opened(self, data) -> None:
        if isinstance(data, _NotOpened):
            log.info("data of layer %s not opened", self._kwargs.get("name"),
                     exc_info=data.error)
            self._fail(data.error)
        else:
            self._next(self._build, data)

    def cancel(self) -> None:
        """Stop before the next step (a layer already inserted stays)."""
        self.cancelled = True

    def _next(self, step, *args) -> None:
        from qtpy.QtCore import QTimer

        if not self.cancelled:
            QTimer.singleShot(0, lambda: self._run(step, *args))

    def _run(self, step, *args) -> None:
        from .callback_time import excluded

        if self.cancelled:
            return
        try:
            with excluded(self.record):
                following = step(*args)
        except Exception as error:  # a closed viewer, data napari refuses
            log.info("layer %s not added", self._kwargs.get("name"), exc_info=True)
            self._fail(error)
            return
        if following is not None:
            self._next(following)
            return
        self.done = True
        if self._then is not None:
            self._then(self.layer)

    # each step returns the next one (None: the layer has arrived)
    def _build(self, data):
        from napari.layers import Labels

        kwargs = {"multiscale": isinstance(data, list), **self._kwargs}
        self.layer = Labels(data, visible=False, **kwargs)
        if self.layer.metadata.get(PREVIEW_KEY):
            _TRANSIENT.add(self.layer)
        return self._insert

    def _insert(self):
        layers = self.viewer.layers
        position = len(layers) if self._position is None else self._position
        layers.insert(min(position, len(layers)), self.layer)
        return self._show if self._visible else None

    def _show(self):
        self.layer.visible = True  # napari slices and reads the first view now

    def _fail(self, error) -> None:
        self.done = True
        if self._failed is not None and not self.cancelled:
            self._failed(error)


def add_labels_without_blocking(viewer, data, *, record: str, position: int | None = None,
                                visible: bool = True, then: Callable | None = None,
                                failed: Callable | None = None, **kwargs) -> LabelsArrival:
    """Add a Labels layer in short main-thread steps (see ``LabelsArrival``).

    ``data``: an array, a list of pyramid levels (multiscale), or a function returning
    either, called in a thread. ``then(layer)`` runs once the layer is in the viewer,
    ``failed(error)`` if opening or adding fails; ``kwargs`` go to ``napari.layers.Labels``.
    """
    arrival = LabelsArrival(viewer, data, record, position, visible, then, failed, kwargs)
    arrival.start()
    return arrival
