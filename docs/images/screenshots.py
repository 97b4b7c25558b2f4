"""What the screenshot scripts in this folder share: a viewer with the sample data and the
widget, settling Qt, and saving a small PNG.

The scripts run as ``python docs/images/<script>.py``, so this folder is on ``sys.path``.
Import this module after the scripts set their environment (Qt is imported here).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image
from qtpy.QtWidgets import QApplication

HERE = Path(__file__).resolve().parent


def settle(seconds: float) -> None:
    """Let Qt draw for a while: napari paints layers and docks over several event-loop turns."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        QApplication.processEvents()
        time.sleep(0.01)


def save_shot(shot, name: str, colors: int) -> Path:
    """A viewer screenshot as a quantized PNG next to this file (kept well under 300 KB)."""
    image = Image.fromarray(np.asarray(shot)[..., :3])
    image = image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    path = HERE / name
    image.save(path, optimize=True)
    print(path, path.stat().st_size // 1024, "KB", image.size)
    return path


def sample_viewer(title: str, size: tuple[int, int]):
    """A shown viewer with the built-in sample layers and the widget docked: (viewer, widget)."""
    import napari

    from napari_mutex_watershed.gui.sample_data import sample_cells
    from napari_mutex_watershed.gui.widget import MutexWatershedWidget

    viewer = napari.Viewer(show=True, title=title)
    viewer.window.resize(*size)
    for data, kwargs, kind in sample_cells():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = MutexWatershedWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Mutex Watershed")
    return viewer, widget
