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


def disconnect_all(connections: list) -> None:
    """Disconnect (emitter, callback) pairs, ignoring emitters that are already gone."""
    for emitter, callback in connections:
        try:
            emitter.disconnect(callback)
        except Exception:
            pass
    connections.clear()
