"""The core install is headless: cluster nodes run the CLI, the blockwise workers, the sweep
and the reference API without napari, Qt, vispy or magicgui (extra ``all`` brings those)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUI_PACKAGES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy", "magicgui",
                "superqt", "app_model")

HEADLESS_MODULES = [
    "napari_mutex_watershed",
    "napari_mutex_watershed.cli",
    "napari_mutex_watershed.processes",
    "napari_mutex_watershed.storage",
    "napari_mutex_watershed.sweep",
    "napari_mutex_watershed.dacapo",
    "napari_mutex_watershed.dacapo.watershed_worker",
    "napari_mutex_watershed.blockwise.launch",
    "napari_mutex_watershed.blockwise.job",
    "napari_mutex_watershed.blockwise.supervise",
    "napari_mutex_watershed.blockwise.worker",
    # the job control of the widget's full run: its process, command, progress, outputs
    "napari_mutex_watershed.blockwise.progress",
    "napari_mutex_watershed.blockwise.run_control",
    "napari_mutex_watershed.blockwise.run_outputs",
    "napari_mutex_watershed.gui.run_layers",
    # the preview's worker process: it segments, it never shows anything
    "napari_mutex_watershed.gui.preview",
    "napari_mutex_watershed.gui.preview_worker",
]

# Imports every headless entry point, runs the CLI's `sample` in-process, then lists the GUI
# modules that got loaded. A fresh interpreter: pytest-qt has loaded Qt into this one.
PROBE = """
import importlib, json, sys
for name in {modules!r}:
    importlib.import_module(name)
from napari_mutex_watershed.cli import main
assert main(["sample", sys.argv[1], "--shape", "8", "16", "16"]) == 0
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({gui!r}))
print(json.dumps(loaded))
"""


def test_headless_entry_points_load_no_gui_module(tmp_path):
    code = PROBE.format(modules=HEADLESS_MODULES, gui=GUI_PACKAGES)
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s.zarr")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [], f"headless imports loaded GUI packages: {loaded}"


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def test_core_dependencies_have_no_gui_and_all_brings_napari_with_qt():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    gui = {p.lower() for p in GUI_PACKAGES}
    core = {_name(r) for r in project["dependencies"]}
    assert not core & gui, f"core dependencies pull the GUI stack: {sorted(core & gui)}"
    extras = project["optional-dependencies"]
    everything = {_name(r) for r in extras["all"]}
    assert {"napari", "magicgui", "qtpy"} <= everything
    assert everything & {"pyqt5", "pyqt6", "pyside2", "pyside6"}, "no Qt binding in [all]"
    assert "napari-mutex-watershed[all]" in extras["testing"], "GUI tests need the GUI stack"
