"""Stopping a widget's worker processes whoever closes it: napari, Qt, or the garbage collector."""

from __future__ import annotations

import weakref


def stop_with_widget(owner, box: list, close) -> weakref.finalize:
    """Call ``owner._teardown()`` and ``close(box)`` when the Qt widget is destroyed, and
    ``close(box)`` when ``owner`` is collected. ``box`` holds the thing to close, so neither
    callback keeps ``owner`` alive."""
    finalizer = weakref.finalize(owner, close, box)
    ref = weakref.ref(owner)

    def on_destroyed(*_args):
        alive = ref()
        if alive is not None:
            alive._teardown()
        close(box)

    owner.native.destroyed.connect(on_destroyed)
    return finalizer


def on_undocked(native, callback) -> None:
    """Call ``callback()`` when the Qt widget ``native`` leaves the dock it was in: napari's
    close (its dock's 'x') takes the widget out and deletes only the dock, so while anything
    in Python refers to the widget (a console, a notebook, a test) it is never destroyed."""
    from qtpy.QtCore import QEvent, QObject

    class Undocked(QObject):
        docked = native.parent() is not None

        def eventFilter(self, watched, event):  # noqa: N802 (Qt's name)
            if event.type() == QEvent.Type.ParentChange:
                if watched.parent() is not None:
                    Undocked.docked = True
                elif Undocked.docked:
                    Undocked.docked = False
                    callback()
            return False

    native.installEventFilter(Undocked(native))


def disconnect_all(connections: list) -> None:
    """Disconnect (emitter, callback) pairs, ignoring emitters that are already gone."""
    for emitter, callback in connections:
        try:
            emitter.disconnect(callback)
        except Exception:
            pass
    connections.clear()
