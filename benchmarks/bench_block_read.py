"""Block read time through storage.open_block_source against zarr directly.

A 64^3 block with the default even halo (6, 12, 12) of 6 x 256^3 uint8 affinities in 32^3
chunks, read as a blockwise worker reads it; also the same block from N5 and HDF5 copies.

    python benchmarks/bench_block_read.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from napari_mutex_watershed.storage import open_block_source, write_affinities

SHAPE, BLOCK, HALO = (256, 256, 256), (64, 64, 64), (6, 12, 12)


def timed(source, region, repeat: int) -> float:
    best = []
    for _ in range(repeat):
        started = time.perf_counter()
        np.asarray(source[region])
        best.append(time.perf_counter() - started)
    return float(np.median(best))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    affinities = rng.integers(0, 255, (6, *SHAPE), dtype=np.uint8)
    lo = tuple(64 - h for h in HALO)
    hi = tuple(128 + h for h in HALO)
    region = (slice(None),) + tuple(slice(a, b) for a, b in zip(lo, hi))
    with tempfile.TemporaryDirectory() as tmp:
        path = write_affinities(Path(tmp) / "a.zarr/affinities", affinities,
                                [(1, 0, 0), (0, 1, 0), (0, 0, 1)] * 2)
        # interleaved, in alternating order, so load from other processes and the position
        # in a round fall on both alike
        sources = (zarr.open_array(str(path), mode="r"), open_block_source(path))
        runs = []
        for i in range(args.repeat):
            order = (0, 1) if i % 2 == 0 else (1, 0)
            times = {k: timed(sources[k], region, 1) for k in order}
            runs.append((times[0], times[1]))
        direct, through = np.median(runs, axis=0)
        print(f"zarr.open_array      {direct * 1000:7.1f} ms")
        print(f"open_block_source    {through * 1000:7.1f} ms  ({through / direct - 1:+.1%})")
        import h5py
        import tensorstore as ts

        with h5py.File(Path(tmp) / "a.h5", "w") as f:
            f.create_dataset("affinities", data=affinities, chunks=(6, 32, 32, 32))
        n5 = ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": f"{tmp}/a.n5/a"},
                      "metadata": {"dimensions": list(affinities.shape[::-1]),
                                   "blockSize": [32, 32, 32, 6], "dataType": "uint8",
                                   "compression": {"type": "gzip"}},
                      "create": True}).result()
        n5[...] = affinities.T
        for name in ("a.h5/affinities", "a.n5/a"):
            print(f"{name:20s} {timed(open_block_source(Path(tmp) / name), region, args.repeat) * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
