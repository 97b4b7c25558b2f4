"""Regenerate the user guide's screenshot: xvfb-run -a python docs/images/make_screenshot.py"""

from __future__ import annotations

import os
import tempfile


def main() -> None:
    os.environ.setdefault("NAPARI_MUTEX_WATERSHED_CONFIG_DIR", tempfile.mkdtemp())
    import napari
    from screenshots import save_shot, settle

    from napari_mutex_watershed.gui.sample_data import sample_cells
    from napari_mutex_watershed.gui.widget import MutexWatershedWidget

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
    save_shot(shot, "widget-preview.png", colors=128)
    viewer.close()


if __name__ == "__main__":
    main()
