"""Where the widget remembers its last values between napari sessions.

A JSON file in the user's config directory (platformdirs, which napari depends on). Set
``NAPARI_MUTEX_WATERSHED_CONFIG_DIR`` to use another directory (tests do).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..storage.paths import read_json, replace_json

CONFIG_DIR_ENV = "NAPARI_MUTEX_WATERSHED_CONFIG_DIR"
FILE_NAME = "widget-settings.json"


def config_dir() -> Path:
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        return Path(override)
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-mutex-watershed", appauthor=False))


def settings_path() -> Path:
    return config_dir() / FILE_NAME


def load_settings() -> dict:
    """The remembered values, or {} when there are none or the file is unreadable."""
    return read_json(settings_path())


def save_settings(values: dict) -> None:
    """Write atomically; a failure to save (read-only home, ...) is not an error."""
    path = settings_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_json(path, values)
    except OSError:
        pass
