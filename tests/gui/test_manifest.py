"""The napari manifest: valid, installed where napari looks, every entry resolvable."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "napari-mutex-watershed"


def _resolve(python_name: str):
    module, _, attribute = python_name.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _check(manifest) -> None:
    commands = {c.id: c for c in manifest.contributions.commands}
    contributions = manifest.contributions
    entries = [
        *(contributions.widgets or []),
        *(contributions.readers or []),
        *(contributions.writers or []),
        *(contributions.sample_data or []),
    ]
    assert entries, "the manifest contributes nothing"
    for entry in entries:
        assert entry.command in commands, f"{entry.command} is not a declared command"
    for command in commands.values():
        assert command.id.startswith(manifest.name + ".")
        assert callable(_resolve(command.python_name)), command.python_name


def test_repository_manifest_validates():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(ROOT / "napari.yaml")
    manifest.validate_imports()
    _check(manifest)
    widgets = {w.display_name for w in manifest.contributions.widgets}
    assert "Mutex Watershed" in widgets
    assert [s.command for s in manifest.contributions.sample_data] == [
        "napari-mutex-watershed.sample_cells"
    ]


def test_installed_manifest_is_found_and_valid():
    """What napari reads: the file named by the ``napari.manifest`` entry point."""
    from npe2 import PluginManifest

    (entry,) = [e for e in entry_points(group="napari.manifest") if e.name == PLUGIN]
    module, _, filename = entry.value.partition(":")
    installed = files(module) / filename
    if not installed.is_file():
        pytest.skip(
            "editable install: the manifest is force-included only into built wheels "
            "(CI installs with `pip install .`)"
        )
    manifest = PluginManifest.from_file(str(installed))
    _check(manifest)
    assert yaml.safe_load(installed.read_text()) == yaml.safe_load(
        (ROOT / "napari.yaml").read_text()
    ), "the installed manifest differs from napari.yaml in the repository"
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    assert PLUGIN in pm
