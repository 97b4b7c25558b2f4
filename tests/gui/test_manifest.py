"""The napari manifest: valid, installed where napari looks, every entry resolvable."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import entry_points
from importlib.resources import files
from pathlib import Path

import pytest
import yaml
from patience import patience

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
    assert installed.is_file(), f"napari cannot find {entry.value}: the plugin is hidden"
    manifest = PluginManifest.from_file(str(installed))
    _check(manifest)
    assert yaml.safe_load(installed.read_text()) == yaml.safe_load(
        (ROOT / "napari.yaml").read_text()
    ), "the installed manifest differs from napari.yaml in the repository"
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    assert PLUGIN in pm


def test_npe2_validate_finds_the_installed_plugin():
    """What a developer runs after ``pip install -e .`` (and CI after ``pip install .``)."""
    npe2 = Path(sys.executable).with_name("npe2")
    done = subprocess.run([str(npe2), "validate", PLUGIN], capture_output=True, text=True,
                          timeout=patience(40))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid" in done.stdout


def test_package_manifest_is_the_top_level_file():
    """napari.yaml stays at the top level; the package sees it through a symlink, so an
    editable install finds it and a wheel gets a copy (tested below)."""
    linked = ROOT / "src" / "napari_mutex_watershed" / "napari.yaml"
    assert linked.is_symlink() and os.readlink(linked) == "../../napari.yaml"
    assert linked.read_bytes() == (ROOT / "napari.yaml").read_bytes()


@pytest.mark.slow
def test_wheel_carries_the_manifest_as_a_file(tmp_path):
    """A regular install (``pip install .``) unpacks a wheel, which must hold the manifest's
    content, also when built from a checkout without symlinks (Windows' default): there the
    package's napari.yaml is a text file holding the link's target."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "napari.yaml"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    stub = source / "src" / "napari_mutex_watershed" / "napari.yaml"
    stub.unlink()
    stub.write_text("../../napari.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
         str(source)], capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("napari_mutex_watershed-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert names.count("napari_mutex_watershed/napari.yaml") == 1
        assert archive.read("napari_mutex_watershed/napari.yaml") == (
            ROOT / "napari.yaml"
        ).read_bytes()
        entry_points_file = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "napari_mutex_watershed:napari.yaml" in archive.read(entry_points_file).decode()
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
