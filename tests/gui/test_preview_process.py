"""How the preview's worker processes start, seen from napari: a user's script without a main
guard previews (the workers are started by module name, the script is not re-run), and a
worker that cannot start is a message within seconds, not "computing ..." forever."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest
from patience import load_per_core, patience, patience_ms

from napari_mutex_watershed.gui import preview

pytestmark = pytest.mark.gui

# Like many napari examples: no `if __name__ == "__main__":`. It notes each run of its top
# level in RUNS (multiprocessing's spawn would run it again in every worker), and quits as
# soon as the preview layer shows, or the widget shows an error.
SCRIPT = """
import json, os, sys
import napari
from qtpy.QtCore import QTimer
from napari_mutex_watershed.gui.sample_data import sample_cells
from napari_mutex_watershed.gui.preview_panel import PREVIEW_LAYER_NAME

with open(sys.argv[1], "a") as runs:
    runs.write(f"{os.getpid()}\\n")
viewer = napari.Viewer()
for data, kwargs, kind in sample_cells():
    getattr(viewer, f"add_{kind}")(data, **kwargs)
_, widget = viewer.window.add_plugin_dock_widget("napari-mutex-watershed", "Mutex Watershed")
widget.preview_panel.preview.value = True


def check():
    shown = PREVIEW_LAYER_NAME in [layer.name for layer in viewer.layers]
    if shown or widget.inputs.message.value:
        timer.stop()
        print(json.dumps({
            "shown": shown, "message": widget.inputs.message.value,
            "shape": list(viewer.layers[PREVIEW_LAYER_NAME].data.shape) if shown else None,
            "workers": list(widget.preview_panel.service().worker_pids().values()),
        }), flush=True)
        os._exit(0)  # abruptly, as a crash would: the workers must end on their own


timer = QTimer()
timer.timeout.connect(check)
timer.start(50)
napari.run()
"""


def test_script_without_main_guard_previews(tmp_path):
    script, runs = tmp_path / "show.py", tmp_path / "runs.txt"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(runs)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=patience(100))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["message"] == "" and report["shown"], report
    assert len(report["shape"]) == 3, report
    assert len(runs.read_text().split()) == 1, "the script ran again in a worker"
    # its parent gone, a worker sees its input end and exits
    workers = [psutil.Process(pid) for pid in report["workers"] if pid is not None
               and psutil.pid_exists(pid)]
    _gone, alive = psutil.wait_procs(workers, timeout=patience(20))
    assert not alive, f"workers outlived napari: {alive}"


def test_widget_says_why_a_worker_cannot_start(viewer_with_widget, qtbot, monkeypatch):
    viewer, widget = viewer_with_widget
    monkeypatch.setattr(preview, "WORKER_MODULE", "napari_mutex_watershed.no_such_module")
    started = time.monotonic()
    widget.preview_panel.preview.value = True
    qtbot.waitUntil(lambda: "could not start" in widget.inputs.message.value,
                    timeout=patience_ms(10))
    assert time.monotonic() - started < 10 * (1 + load_per_core())  # within seconds
    assert "No module named napari_mutex_watershed.no_such_module" in widget.inputs.message.value
    assert widget.preview_panel.status.value == "Preview failed"
    # once the worker can start again, the next change previews
    widget.preview_panel.service().module = "napari_mutex_watershed.gui.preview_worker"
    widget.inputs.fields["bias_short"].value = 0.55
    qtbot.waitUntil(lambda: widget.preview_panel.last_result is not None, timeout=patience_ms(20))
    assert widget.inputs.message.value == ""
