"""Regenerate the user guide's screenshot: xvfb-run -a python docs/images/make_screenshot.py"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    os.environ.setdefault("NAPARI_MUTEX_WATERSHED_CONFIG_DIR", tempfile.mkdtemp())
    import napari
    import numpy as np
    from PIL import Image
    from qtpy.QtWidgets import QApplication

    from napari_mutex_watershed.gui.sample_data import sample_cells
    from napari_mutex_watershed.gui.widget import MutexWatershedWidget

    def settle(seconds):
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            QApplication.processEvents()
            time.sleep(0.01)

    viewer = napari.Viewer(show=True, title="napari: mutex watershed preview")
    viewer.window.resize(1280, 860)
    for data, kwargs, kind in sample_cells():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = MutexWatershedWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Mutex Watershed")
    settle(0.5)
    viewer.dims.set_current_step(1, 32)
    viewer.reset_view()
    viewer.scene.camera.zoom *= 1.6
    viewer.scene.camera.center = (32, 70, 60)
    widget.fields["min_size"].value = 20
    widget.preview.value = True
    while widget.last_result is None:
        settle(0.1)
    viewer.layers.selection.active = viewer.layers["preview"]
    settle(1.0)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    widget.close_preview()
    image = Image.fromarray(np.asarray(shot)[..., :3])
    image = image.quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    path = HERE / "widget-preview.png"
    image.save(path, optimize=True)
    print(path, path.stat().st_size // 1024, "KB", image.size)
    viewer.close()


if __name__ == "__main__":
    main()
