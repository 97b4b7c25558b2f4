"""How long adding a result layer holds napari's main thread: one call against short steps.

Run with a display (or under Xvfb):

    xvfb-run -a python benchmarks/bench_layer_add.py [--repeat 3]

For each input, an OME-Zarr labels pyramid on disk opened lazily (``open_result``, as the
full run shows its output), the layer is added to a viewer holding an image, two ways:

- ``add_labels``: napari's ``viewer.add_labels`` in one call (the baseline),
- ``in steps``: ``gui.layers.add_labels_without_blocking`` (data opened in a thread, then
  build, insert and show, one turn of the event loop each).

Columns: the main-thread CPU time of the longest step (ms; the one call for the baseline),
the longest wall-clock gap of a 10 ms QTimer on the main thread while the layer arrives, the
time until it has arrived, each as the range over the repeats, and the ratio of the longest
step to the baseline's. The first Labels layer of a process pays one-time costs (imports,
vispy's dash patterns): ``--cold`` measures that first add, each way in its own process.
Inputs: the full-run benchmark's 24 x 64 x 64, the sample's 64 x 128 x 128 and, when
``/work/shared/data`` (or ``$MWS_SHARED_DATA``) holds it, the 256 x 512 x 512 pinky40
segmentation.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_ui_responsiveness import _process_until, _settle

SHARED = Path(os.environ.get("MWS_SHARED_DATA", "/work/shared/data"))
WAYS = ("add_labels", "in steps")
RECORD = "bench.add_layer"


def inputs() -> dict[str, np.ndarray]:
    from napari_mutex_watershed.synthetic import sample_volume

    found = {"24x64x64": sample_volume((24, 64, 64))[1],
             "64x128x128": sample_volume((64, 128, 128))[1]}
    pinky = SHARED / "pinky40_gt_half.npz"
    if pinky.exists():
        found["256x512x512 pinky40"] = np.load(pinky)["labels"]
    return found


def write_pyramid(folder: Path, labels: np.ndarray) -> Path:
    """``labels`` as the full run writes them: OME-Zarr levels, 64^3 chunks."""
    import zarr

    from napari_mutex_watershed.blockwise.pyramid import downsample_mode
    from napari_mutex_watershed.storage import labels_levels
    from napari_mutex_watershed.storage.outputs import create_labels_image

    ndim = labels.ndim
    path = create_labels_image(folder / "result.zarr" / "labels", labels.shape, np.uint32,
                               ["z", "y", "x"][-ndim:], (1,) * ndim, (0,) * ndim,
                               [""] * ndim, (64,) * ndim, {}, overwrite=True)
    level = labels.astype(np.uint32)
    above = (1,) * ndim
    for location, factor in labels_levels(path):
        step = tuple(f // a for f, a in zip(factor, above))
        level = downsample_mode(level, step)
        zarr.open_array(str(location), mode="r+")[...] = level
        above = factor
    return path


def add_once(app, viewer, path: Path, way: str) -> tuple[float, float, float]:
    """Add the result at ``path`` one ``way``: (longest main-thread CPU of a step, longest
    timer gap, seconds until arrived); the layer is removed again."""
    from qtpy.QtCore import QTimer

    from napari_mutex_watershed.gui import callback_time
    from napari_mutex_watershed.gui.layers import add_labels_without_blocking
    from napari_mutex_watershed.gui.run_layers import open_result

    gc.collect()
    gc.freeze()  # (a full collection of older objects is not the add)
    callback_time.reset()
    ticks = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    arrived = []
    started = time.perf_counter()
    if way == "add_labels":
        with callback_time.excluded(RECORD):
            data = open_result(path)
            arrived.append(viewer.add_labels(data, name="result",
                                             multiscale=isinstance(data, list)))
    else:
        def failed(error):
            raise RuntimeError(f"the layer was not added: {error}")

        add_labels_without_blocking(viewer, lambda: open_result(path), record=RECORD,
                                    name="result", then=arrived.append, failed=failed)
    _process_until(app, lambda: bool(arrived))
    seconds = time.perf_counter() - started
    _settle(app, 0.3)  # the first draws after it
    timer.stop()
    gc.unfreeze()
    ticks = [started, *ticks]
    gap = max((b - a for a, b in itertools.pairwise(ticks)), default=0.0)
    cpu = callback_time.RECORDS[RECORD].longest_cpu
    viewer.layers.remove(arrived[0])
    _settle(app, 0.2)
    return cpu, gap, seconds


def viewer_with_image(app):
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    viewer.add_image(np.random.default_rng(0).random((64, 128, 128), np.float32))
    _settle(app, 0.5)
    return viewer


def measure(repeat: int, cold: bool, only_way: str | None = None) -> dict:
    """{(input, way): [(cpu, gap, seconds), ...]}."""
    from napari.qt import get_qapp

    app = get_qapp()
    viewer = viewer_with_image(app)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, labels in inputs().items():
            path = write_pyramid(Path(folder) / name.split()[0], labels)
            if not cold:  # one-time costs paid before measuring
                add_once(app, viewer, path, "add_labels")
            for _ in range(1 if cold else repeat):
                for way in WAYS if only_way is None else (only_way,):
                    results.setdefault((name, way), []).append(
                        add_once(app, viewer, path, way))
            if cold:
                break  # only the first add of the process is cold
    viewer.close()
    return results


def span(values, scale=1000.0, digits=0) -> str:
    low, high = min(values) * scale, max(values) * scale
    return f"{low:.{digits}f}" if round(low, digits) == round(high, digits) else (
        f"{low:.{digits}f}-{high:.{digits}f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cold", action="store_true",
                        help="the first Labels layer of a process, each way in its own")
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # (--cold's child)
    args = parser.parse_args(argv)
    if args.cold and args.way:  # a child: print its one result
        (key, rows), = measure(1, True, args.way).items()
        print(repr((key, rows)))
        return
    if args.cold:
        results = {}
        for _ in range(args.repeat):
            for way in WAYS:
                output = subprocess.run([sys.executable, __file__, "--cold", "--way", way],
                                        capture_output=True, text=True, check=True).stdout
                key, rows = eval(output.strip().splitlines()[-1])  # (our own repr)
                results.setdefault(key, []).extend(rows)
    else:
        results = measure(args.repeat, False)
    header = ["input", "way", "longest main-thread step cpu ms", "x add_labels",
              "longest gap ms", "arrived after ms"]
    rows = []
    for (name, way), runs in results.items():
        baseline = results[(name, "add_labels")]
        ratio = np.median([r[0] for r in runs]) / np.median([r[0] for r in baseline])
        rows.append([name, way, span([r[0] for r in runs], digits=0), f"{ratio:.2f}",
                     span([r[1] for r in runs]), span([r[2] for r in runs])])
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for cells in rows:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    load = os.getloadavg()[0]
    print(f"({'first Labels layer of a process' if args.cold else 'warm'}; ranges over "
          f"{args.repeat} repeats; load average {load:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
