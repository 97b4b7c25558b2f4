"""Regenerate docs/sweep.md's screenshot:

    xvfb-run -a -s "-screen 0 1700x1000x24" python docs/images/make_sweep_screenshot.py
"""

from __future__ import annotations

import os
import tempfile


def main() -> None:
    os.environ.setdefault("NAPARI_MUTEX_WATERSHED_CONFIG_DIR", tempfile.mkdtemp())
    from screenshots import sample_viewer, save_shot, settle

    viewer, widget = sample_viewer("napari: mutex watershed sweep", (1640, 940))
    viewer.layers["ground truth"].visible = True  # its own cell in the grid, to compare
    panel = widget.sweep_panel
    for name, section in widget.sections.items():  # the sweep's section in view
        section.set_expanded(name in ("Input", "Sweep"))
    settle(0.5)
    viewer.dims.set_current_step(1, 32)
    viewer.reset_view()
    panel.run()
    while panel.running:
        settle(0.1)
    panel.grid_view.value = True
    viewer.canvas.grid.spacing = 6
    viewer.reset_view()
    settle(0.5)
    widget.scroll.verticalScrollBar().setValue(widget.scroll.verticalScrollBar().maximum())
    settle(1.0)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    panel.close_sweep()
    save_shot(shot, "sweep-grid.png", colors=128)
    print(panel.status.value)
    os._exit(0)  # (closing a viewer with several Labels layers can crash under Xvfb)


if __name__ == "__main__":
    main()
