"""Neuroglancer, in a real headless Chromium, opens the labels a run writes (issue 20).

The test serves the result over 127.0.0.1 (a threaded HTTP server with CORS headers), opens
neuroglancer's Python-package viewer in Debian's chromium through chromedriver, and asserts
what neuroglancer reports for the layer: data type, axes, voxel size and bounds. Set
``MWS_UPDATE_DOCS_IMAGES=1`` to refresh docs/images/neuroglancer-output.png.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import OFFSET, SHAPE, VOXEL

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "neuroglancer-output.png"
#: neuroglancer's DataType enum (src/util/data_type.ts)
DATA_TYPES = {0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32",
              6: "uint64", 7: "float32"}
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                       reason="needs Debian's chromium and chromium-driver"),
]

#: What the client reports for the first layer once its source has loaded.
LAYER_INFO = """
const viewer = window.viewer;
if (!viewer) return null;
const managed = viewer.layerManager.managedLayers;
if (!managed.length || !managed[0].layer) return null;
const source = managed[0].layer.dataSources[0];
const state = source && source.loadState;
if (state === undefined) return null;
if (state.error !== undefined) return JSON.stringify({error: state.error.message});
const space = state.dataSource.modelTransform.outputSpace;
return JSON.stringify({
  dataTypes: state.dataSource.subsources.filter(s => s.subsource.volume)
      .map(s => s.subsource.volume.dataType),
  names: space.names, scales: Array.from(space.scales), units: space.units,
  lower: Array.from(space.bounds.lowerBounds), upper: Array.from(space.bounds.upperBounds)});
"""


class CorsHandler(http.server.SimpleHTTPRequestHandler):
    def end_headers(self):
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def served(result):
    """Base URL of the folder holding both results, on 127.0.0.1."""
    root = result["v3"].parents[1]
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(CorsHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    thread.join()


@pytest.fixture
def browser(tmp_path):
    import selenium.webdriver
    from selenium.webdriver.chrome.service import Service

    options = selenium.webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                     f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1000,800"):
        options.add_argument(argument)
    driver = selenium.webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def layer_info(driver, timeout: float = 60.0) -> dict:
    """Poll the client until the layer's source has loaded (or failed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = driver.execute_script(LAYER_INFO)
        if info:
            return json.loads(info)
        time.sleep(0.1)
    raise TimeoutError("neuroglancer did not load the layer")


@pytest.mark.parametrize("fmt,scheme", [("v3", "zarr3"), ("v2", "zarr2")])
def test_neuroglancer_reports_the_layer(result, served, browser, fmt, scheme, tmp_path):
    import neuroglancer
    from PIL import Image

    base, root = served
    path = result[fmt].relative_to(root).as_posix()
    neuroglancer.set_server_bind_address("127.0.0.1")
    viewer = neuroglancer.Viewer()
    with viewer.txn() as state:
        state.layers["labels"] = neuroglancer.SegmentationLayer(
            source=f"{scheme}://{base}/{path}")
        state.layout = "xy"
    browser.get(viewer.get_viewer_url())

    info = layer_info(browser)
    assert "error" not in info, info["error"]
    assert [DATA_TYPES[t] for t in info["dataTypes"]] == ["uint32"]
    assert info["names"] == ["z", "y", "x"] and info["units"] == ["m", "m", "m"]
    np.testing.assert_allclose(info["scales"], [v * 1e-9 for v in VOXEL])
    # bounds in voxels; neuroglancer puts OME's translation at the centre of the first voxel
    lower = [o / v - 0.5 for o, v in zip(OFFSET, VOXEL)]
    np.testing.assert_allclose(info["lower"], lower)
    np.testing.assert_allclose(info["upper"], [lo + s for lo, s in zip(lower, SHAPE)])
    # zoom so the volume fills the view, in the middle of z; the screenshot waits until
    # every visible chunk is drawn
    with viewer.txn() as state:
        state.dimensions = neuroglancer.CoordinateSpace(
            names=["z", "y", "x"], units="nm", scales=list(VOXEL))
        state.display_dimensions = ["x", "y", "z"]  # the xy plane, y down
        state.position = [(lo + up) / 2 for lo, up in zip(info["lower"], info["upper"])]
        state.cross_section_scale = SHAPE[1] / 700
    shot = viewer.screenshot(size=[1000, 800]).screenshot.image
    image = tmp_path / "neuroglancer.png"
    image.write_bytes(shot)
    pixels = np.asarray(Image.open(image).convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    background = counts.max() / len(pixels)
    assert background < 0.6, f"{background:.0%} of the screenshot is one colour"
    assert (counts > 100).sum() > 20  # many segments, each drawn in its own colour
    if fmt == "v3" and os.environ.get("MWS_UPDATE_DOCS_IMAGES"):
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, DOCS_IMAGE)
