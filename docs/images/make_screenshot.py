"""Regenerate the user guide's screenshot: xvfb-run -a python docs/images/make_screenshot.py"""

from __future__ import annotations

import os
import tempfile


def main() -> None:
    os.environ.setdefault("NAPARI_MUTEX_WATERSHED_CONFIG_DIR", tempfile.mkdtemp())
    from screenshots import sample_viewer, save_shot, settle

    from napari_mutex_watershed.gui.preview_panel import PREVIEW_LAYER_NAME

    viewer, widget = sample_viewer("napari: mutex watershed preview", (1280, 860))
    settle(0.5)
    viewer.dims.set_current_step(1, 32)
    viewer.reset_view()
    viewer.scene.camera.zoom *= 1.6
    viewer.scene.camera.center = (32, 70, 60)
    panel = widget.preview_panel
    panel.preview.value = True
    while panel.last_result is None:
        settle(0.1)
    viewer.layers.selection.active = viewer.layers[PREVIEW_LAYER_NAME]
    settle(1.0)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    widget.close_preview()
    save_shot(shot, "widget-preview.png", colors=128)
    viewer.close()


if __name__ == "__main__":
    main()
