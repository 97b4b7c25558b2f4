"""How far a small run is from what it must do: the library's run of one block against its
file operations alone, each against a bare ``segment()`` in the same process (issue #24,
point 4: at most 1.2x the bare call).

    python benchmarks/bench_small_floor.py                     # 16x32x32, in /tmp
    python benchmarks/bench_small_floor.py --work /dev/shm --shape 32 64 64

The *floor* makes, in plain Python with no checks, the file operations a run that is safe
to rerun, resume and open elsewhere makes: read the input's metadata (array and group) and
decode its chunk, take the output's lock, write the OME-Zarr group, the labels group and
level 0 with the run's attributes (complete: false) and the plan, segment, write the chunk
of labels, set the complete flag on both. Its files are copies of those a library call
wrote, so the two write the same bytes (level 0 alone: one block is one chunk, so there
is no pyramid). Calls alternate (bare call, library call, floor),
each into a new output; medians of ``--calls`` after ``WARMUP``.
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import zarr
from numcodecs import Zstd

#: Calls left out of the medians: the first of each kind pays its first-call costs.
WARMUP = 5


def replace(path: str, data: bytes) -> None:
    partial = f"{path}.{uuid.uuid4().hex}.partial"
    with open(partial, "wb") as file:
        file.write(data)
    os.replace(partial, path)


def floor_run(source: str, output: str, files: dict, segment, parameters) -> float:
    """The run's file operations around one ``segment()``; returns the kernel's seconds."""
    metadata = json.loads(Path(source, "zarr.json").read_bytes())
    json.loads(Path(source).parent.joinpath("zarr.json").read_bytes())  # its group
    codec = Zstd(level=0)
    shape, chunks = metadata["shape"], metadata["chunk_grid"]["configuration"]["chunk_shape"]
    data = np.empty(shape, metadata["data_type"])
    for grid in itertools.product(*[range(-(-n // c)) for n, c in zip(shape, chunks)]):
        chunk = np.frombuffer(codec.decode(Path(source, "c", *map(str, grid)).read_bytes()),
                              data.dtype).reshape(chunks)
        region = tuple(slice(g * c, min((g + 1) * c, n)) for g, c, n in zip(grid, chunks, shape))
        data[region] = chunk[tuple(slice(0, r.stop - r.start) for r in region)]
    container, work = Path(output).parent, f"{Path(output).parent}.mutex_watershed"
    os.makedirs(f"{work}/labels", exist_ok=True)
    lock = os.open(f"{work}/labels.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    level0 = f"{output}/0"
    os.makedirs(f"{level0}/c/" + "/".join(["0"] * (len(shape) - 2)), exist_ok=True)
    replace(f"{container}/zarr.json", files["root"])
    for name, complete in (("group", False), ("level0", False)):
        files[name]["attributes"]["mutex_watershed_complete"] = complete
    replace(f"{output}/zarr.json", json.dumps(files["group"]).encode())
    replace(f"{level0}/zarr.json", json.dumps(files["level0"]).encode())
    replace(f"{work}/labels/plan.json", files["plan"])
    started = time.perf_counter()
    labels = segment(data, parameters)
    kernel = time.perf_counter() - started
    replace(f"{level0}/c/" + "/".join(["0"] * labels.ndim),
            codec.encode(labels.astype(files["level0"]["data_type"])))
    for name in ("group", "level0"):
        files[name]["attributes"]["mutex_watershed_complete"] = True
    replace(f"{output}/zarr.json", json.dumps(files["group"]).encode())
    replace(f"{level0}/zarr.json", json.dumps(files["level0"]).encode())
    os.close(lock)
    return kernel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(16, 32, 32))
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--work", metavar="DIR", help="the folder (default: the system's "
                        "temporary folder)")
    args = parser.parse_args()
    from napari_mutex_watershed import WatershedParameters, segment
    from napari_mutex_watershed.blockwise.launch import segment_blockwise_zarr, work_dir_for
    from napari_mutex_watershed.storage import open_affinities
    from napari_mutex_watershed.synthetic import write_sample

    work = Path(tempfile.mkdtemp(prefix="bench_small_floor_", dir=args.work))
    try:
        sample = write_sample(work / "sample.zarr", tuple(args.shape), overwrite=True)
        source = str(sample["affinities"])
        parameters = WatershedParameters(offsets=open_affinities(source).offsets)
        data = np.asarray(zarr.open_array(source)[...])
        model = work / "model.zarr/labels"
        segment_blockwise_zarr(source, model, parameters, progress="none")
        files = {"root": (model.parent / "zarr.json").read_bytes(),
                 "group": json.loads((model / "zarr.json").read_bytes()),
                 "level0": json.loads((model / "0/zarr.json").read_bytes()),
                 "plan": (work_dir_for(model) / "plan.json").read_bytes()}
        times = {"bare": [], "library": [], "floor": [], "floor kernel": []}
        for k in range(WARMUP + args.calls):
            started = time.perf_counter()
            segment(data, parameters)
            times["bare"].append(time.perf_counter() - started)
            started = time.perf_counter()
            segment_blockwise_zarr(source, work / f"library{k}.zarr/labels", parameters,
                                   progress="none")
            times["library"].append(time.perf_counter() - started)
            started = time.perf_counter()
            times["floor kernel"].append(floor_run(
                source, str(work / f"floor{k}.zarr/labels"), files, segment, parameters))
            times["floor"].append(time.perf_counter() - started)
        median = {name: statistics.median(values[WARMUP:]) for name, values in times.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bare = median["bare"]
    print(f"\n{' x '.join(map(str, args.shape))} voxels in {work.parent}, medians of "
          f"{args.calls} calls each (load {os.getloadavg()[0]:.1f})\n")
    print("| run | ms | / bare call | beside the bare call, ms |")
    print("|---|---|---|---|")
    for name in ("bare", "library", "floor"):
        print(f"| {name} | {median[name] * 1e3:.2f} | {median[name] / bare:.2f}x | "
              f"{(median[name] - bare) * 1e3:.2f} |")
    print(f"\n1.2x the bare call leaves {bare * 0.2e3:.2f} ms beside it; the floor's file "
          f"operations take {(median['floor'] - median['floor kernel']) * 1e3:.2f} ms "
          "beside its own kernel")


if __name__ == "__main__":
    main()
