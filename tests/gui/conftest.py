"""Fixtures for the napari plugin tests.

Qt tests need a display: run them as ``xvfb-run -a pytest tests/gui``. Without one they are
skipped (napari aborts the whole process when it cannot open a display), except the
pure-numpy ones.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "napari-mutex-watershed"
WIDGET = "Mutex Watershed"

HAS_DISPLAY = bool(
    os.environ.get("DISPLAY")
    or os.environ.get("WAYLAND_DISPLAY")
    or sys.platform in ("win32", "darwin")
)


def pytest_collection_modifyitems(config, items):
    if HAS_DISPLAY:
        return
    skip = pytest.mark.skip(reason="needs a display: run under xvfb-run -a pytest")
    for item in items:
        if item.get_closest_marker("gui") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _config_dir(tmp_path, monkeypatch):
    """Remembered widget values go to a temporary directory, never the real home."""
    from napari_mutex_watershed.gui.settings import CONFIG_DIR_ENV

    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "config"))


@pytest.fixture
def plugin_manager():
    """npe2's plugin manager with this plugin registered.

    A non-editable install (CI: ``pip install .``) provides the manifest inside the package.
    An editable install leaves it at the repository root only, so it is registered from
    there (the same file the wheel force-includes).
    """
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover()
    if PLUGIN not in pm:
        pm.register(npe2.PluginManifest.from_file(ROOT / "napari.yaml"))
    return pm


@pytest.fixture(scope="session")
def sample_layers():
    """The plugin's sample data (generated once per session)."""
    from napari_mutex_watershed.gui.sample_data import sample_cells

    return sample_cells()


@pytest.fixture
def viewer_with_widget(make_napari_viewer_proxy, plugin_manager, sample_layers, qtbot):
    """A viewer (plugin proxy, main-thread checks on) with the sample data and the widget
    docked through the manifest. The preview processes are stopped at teardown."""
    viewer = make_napari_viewer_proxy(show=True)
    for data, kwargs, kind in sample_layers:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.preview_panel.debounce_ms = 50
    yield viewer, widget
    widget.close_preview()
