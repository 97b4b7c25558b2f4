"""Regenerate docs/workflow.md's screenshots: xvfb-run -a python docs/images/workflow-screenshots.py

Writes workflow-open.png, workflow-running.png, workflow-result.png and workflow-provenance.png
next to this file (quantized PNGs, well under 300 KB each). The sample volume is written to a
temporary zarr container, opened with the plugin's reader and segmented with the widget's
Run button, exactly as a user would.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="mws-workflow-"))
    os.environ.setdefault("NAPARI_MUTEX_WATERSHED_CONFIG_DIR", str(scratch / "config"))
    os.environ.setdefault("NAPARI_MUTEX_WATERSHED_DATA_DIR", str(scratch / "data"))
    import napari
    import npe2
    from screenshots import save_shot, settle

    from napari_mutex_watershed.storage import write_affinities
    from napari_mutex_watershed.synthetic import sample_volume

    manager = npe2.PluginManager.instance()
    manager.discover()
    if "napari-mutex-watershed" not in manager:  # editable install: the manifest is at the root
        manager.register(npe2.PluginManifest.from_file(ROOT / "napari.yaml"))

    def shoot(viewer, name):
        settle(0.5)
        save_shot(viewer.screenshot(canvas_only=False, flash=False), name, colors=96)

    affinities, _truth, offsets = sample_volume((64, 128, 128))
    container = scratch / "sample.zarr"
    write_affinities(container / "affinities", affinities, offsets)

    viewer = napari.Viewer(show=True, title="napari: mutex watershed full run")
    viewer.window.resize(1600, 1000)
    viewer.open(str(container / "affinities"), plugin="napari-mutex-watershed")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-mutex-watershed",
                                                         "Mutex Watershed")
    panel = widget.full_run
    widget.sections["Full run"].set_expanded(True)
    widget.inputs.fields["bias_short"].value = 0.45  # (not the default: restored below)
    panel.block_size.value = "32, 64, 64"
    viewer.dims.set_current_step(1, 32)
    settle(0.5)
    viewer.reset_view()
    scroll = widget.scroll.verticalScrollBar()
    scroll.setValue(scroll.maximum())  # the Full run section in view
    shoot(viewer, "workflow-open.png")

    panel.start()
    while panel.running and not any(
        m["phase"] == "odd" and m["done"] >= 1 for m in (panel.job.progress
                                                               if panel.job else [])
    ):
        settle(0.1)
    shoot(viewer, "workflow-running.png")
    while panel.running or panel.result_pending:
        settle(0.2)
    viewer.layers["affinities"].visible = True
    shoot(viewer, "workflow-result.png")

    # provenance: open the result with the reader, restore its parameters
    widget.inputs.reset_parameters()
    panel.block_size.value = ""
    for layer in list(viewer.layers):
        if layer.name != "affinities":
            viewer.layers.remove(layer)
    (result,) = viewer.open(str(container / "labels_mws"), plugin="napari-mutex-watershed")
    viewer.layers.selection.active = result
    panel.use_selected_result()
    shoot(viewer, "workflow-provenance.png")
    viewer.close()
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
