"""What the screenshot scripts in this folder share: settling Qt and saving a small PNG.

The scripts run as ``python docs/images/<script>.py``, so this folder is on ``sys.path``.
Import this module after the scripts set their environment (Qt is imported here).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image
from qtpy.QtWidgets import QApplication

HERE = Path(__file__).resolve().parent


def settle(seconds: float) -> None:
    """Let Qt draw for a while: napari paints layers and docks over several event-loop turns."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        QApplication.processEvents()
        time.sleep(0.01)


def save_shot(shot, name: str, colors: int) -> Path:
    """A viewer screenshot as a quantized PNG next to this file (kept well under 300 KB)."""
    image = Image.fromarray(np.asarray(shot)[..., :3])
    image = image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    path = HERE / name
    image.save(path, optimize=True)
    print(path, path.stat().st_size // 1024, "KB", image.size)
    return path
