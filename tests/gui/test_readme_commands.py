"""README's "Try it" block is what a new user copies: the first line installs with the GUI and
runs the job on the sample (CI runs it verbatim, see .ci/run), the second opens napari with
the widget docked. The second is run here, unchanged, under the test's display."""

from __future__ import annotations

import json
import os
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "napari-mutex-watershed"

# napari runs this (its `startup_script` setting) right after it creates the viewer, before
# it opens the paths and docks the widgets of the command line: it watches for the result
# and quits napari once the widget is docked and the layer is open.
CHECK = """
import json, os
import napari
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

viewer = napari.current_viewer()
report = os.environ["MWS_README_REPORT"]


def finish(state):
    timer.stop()
    with open(report, "w") as file:
        json.dump(state, file)
    viewer.close()


def check():
    docks = dict(viewer.window.dock_widgets)
    state = {
        "docks": {name: type(widget).__name__ for name, widget in docks.items()},
        "layers": [layer.name for layer in viewer.layers],
        "dialogs": [w.windowTitle() for w in QApplication.topLevelWidgets()
                    if w.isVisible() and w is not viewer.window._qt_window],
    }
    if state["dialogs"]:  # e.g. "Choose reader": a user would be asked, not shown the data
        timer.stop()
        with open(report, "w") as file:
            json.dump(state, file)
        os._exit(3)  # a modal dialog's loop would outlive viewer.close()
    widgets = [w for w in docks.values() if type(w).__name__ == "MutexWatershedWidget"]
    if widgets and viewer.layers and viewer.window._qt_window.isVisible():
        state["widget_affinities"] = getattr(widgets[0].inputs.affinities.value, "name", None)
        finish(state)


timer = QTimer()
timer.timeout.connect(check)
timer.start(50)
"""


def try_it_lines() -> list[str]:
    return runpy.run_path(str(ROOT / ".ci" / "readme.py"))["try_it_lines"]()


def test_try_it_installs_the_gui_runs_the_job_then_opens_napari():
    first, second, *rest = try_it_lines()
    assert not rest, "Try it has two lines: the job, then napari"
    steps = [step.strip() for step in first.split("&&")]
    assert 'pip install ".[all]"' in steps, "the first command must install with the GUI"
    assert "napari-mutex-watershed sample sample.zarr" in steps
    assert any(step.startswith("napari-mutex-watershed segment sample.zarr/affinities ")
               for step in steps)
    words = shlex.split(second)
    assert words[:2] == ["napari", "sample.zarr/affinities"]
    assert words[words.index("-w") + 1] == PLUGIN
    assert words[words.index("--plugin") + 1] == PLUGIN, "another zarr reader would ask"
    manifest = yaml.safe_load((ROOT / "napari.yaml").read_text())
    assert manifest["name"] == PLUGIN and len(manifest["contributions"]["widgets"]) == 1, (
        "`-w PLUGIN` without a widget name needs the plugin to have exactly one widget"
    )


def test_ci_runs_the_first_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 .ci/readme.py 1" in ci


@pytest.mark.gui
def test_second_line_opens_napari_with_the_widget_docked(tmp_path):
    _first, second = try_it_lines()
    words = shlex.split(second)
    napari = Path(sys.executable).with_name(words[0])
    assert napari.exists(), f"no {words[0]} script beside {sys.executable}"
    done = subprocess.run(
        [sys.executable, "-m", "napari_mutex_watershed.cli", "sample", "sample.zarr",
         "--shape", "16", "48", "48"], cwd=tmp_path, capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (tmp_path / "check.py").write_text(CHECK)
    # napari's settings for this run only: the startup script, nothing from the user's
    (tmp_path / "settings.yaml").write_text(
        yaml.safe_dump({"application": {"startup_script": str(tmp_path / "check.py")}})
    )
    report = tmp_path / "report.json"
    env = {**os.environ, "NAPARI_CONFIG": str(tmp_path / "settings.yaml"),
           "MWS_README_REPORT": str(report)}
    done = subprocess.run([str(napari), *words[1:]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert report.exists(), f"napari ended without docking the widget:\n{done.stderr[-3000:]}"
    state = json.loads(report.read_text())
    assert state["dialogs"] == [], f"napari asked the user first: {state}"
    assert "affinities" in state["layers"], state
    assert "MutexWatershedWidget" in state["docks"].values(), state
    assert state["widget_affinities"] == "affinities", state
    assert done.returncode == 0, done.stderr[-3000:]
