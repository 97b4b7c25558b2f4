"""Block read time through storage.open_block_source (zarr: its chunk files) against zarr.

A 64 x 128 x 128 block (the default at 256^3) with the default even halo (6, 12, 12) and
with the odd halo (6, 16, 16), of 6 x 256^3 uint8 affinities in 32^3 chunks (zstd, as
``write_affinities`` writes them), read as a blockwise worker reads it: wall and CPU time
(zarr decodes in threads, whose CPU another worker's kernel would have had); also the
even box from N5 and HDF5 copies; and a block's fragments (its core, uint64 labels, into the
half-block chunks of the run's fragments array) written both ways.

    python benchmarks/bench_block_read.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from napari_mutex_watershed.blockwise.launch import FRAGMENTS_COMPRESSION_LEVEL, fragment_chunks
from napari_mutex_watershed.storage import open_block_source, write_affinities
from napari_mutex_watershed.storage.chunk_files import ChunkFiles

SHAPE, BLOCK = (256, 256, 256), (64, 128, 128)
HALOS = {"even": (6, 12, 12), "odd": (6, 16, 16)}


def timed(source, region, repeat: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``repeat`` reads."""
    wall, cpu = [], []
    for _ in range(repeat):
        started, used = time.perf_counter(), time.process_time()
        np.asarray(source[region])
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - used)
    return float(np.median(wall)), float(np.median(cpu))


def timed_write(target, region, values) -> tuple[float, float]:
    started, used = time.perf_counter(), time.process_time()
    target[region] = values
    return time.perf_counter() - started, time.process_time() - used


def box(halo) -> tuple[slice, ...]:
    """The second block along each axis and its halo (cut at the volume's edge), as a worker
    reads it."""
    return (slice(None),) + tuple(slice(b - h, min(2 * b + h, n))
                                  for b, h, n in zip(BLOCK, halo, SHAPE))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # smooth in space, so it compresses about as predictions do
    affinities = (rng.integers(0, 8, (6, *SHAPE), dtype=np.uint8) * 32).cumsum(axis=3,
                                                                               dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_affinities(Path(tmp) / "a.zarr/affinities", affinities,
                                [(1, 0, 0), (0, 1, 0), (0, 0, 1)] * 2)
        # interleaved, in alternating order, so load from other processes and the position
        # in a round fall on both alike
        sources = (zarr.open_array(str(path), mode="r"), open_block_source(path))
        print("| box | zarr.open_array: wall / CPU ms | open_block_source: wall / CPU ms | "
              "CPU ratio |\n|---|---|---|---|")
        for name, halo in HALOS.items():
            region = box(halo)
            runs = []
            for i in range(args.repeat):
                order = (0, 1) if i % 2 == 0 else (1, 0)
                times = {k: timed(sources[k], region, 1) for k in order}
                runs.append((*times[0], *times[1]))
            wall, cpu, own_wall, own_cpu = np.median(runs, axis=0) * 1000
            shape = "x".join(str(s.stop - s.start) for s in region[1:])
            print(f"| {name} {shape} | {wall:.1f} / {cpu:.1f} | {own_wall:.1f} / {own_cpu:.1f} | "
                  f"{own_cpu / cpu:.2f} |")
        fragments = zarr.create_array(
            Path(tmp) / "f.zarr", shape=SHAPE, chunks=fragment_chunks(BLOCK), dtype=np.uint64,
            fill_value=0, compressors=ZstdCodec(level=FRAGMENTS_COMPRESSION_LEVEL))
        # labels of about a thousand fragments, in runs along x as the kernel's are
        labels = np.repeat(rng.integers(1, 1000, (BLOCK[0], BLOCK[1], BLOCK[2] // 16),
                                        dtype=np.uint64), 16, axis=2)
        core = tuple(slice(b, 2 * b) for b in BLOCK)
        targets = (fragments, ChunkFiles.of(fragments))
        runs = []
        for i in range(args.repeat):
            order = (0, 1) if i % 2 == 0 else (1, 0)
            times = {k: timed_write(targets[k], core, labels) for k in order}
            runs.append((*times[0], *times[1]))
        wall, cpu, own_wall, own_cpu = np.median(runs, axis=0) * 1000
        print(f"| fragments write {'x'.join(map(str, BLOCK))} uint64 | {wall:.1f} / {cpu:.1f} | "
              f"{own_wall:.1f} / {own_cpu:.1f} | {own_cpu / cpu:.2f} |")
        region = box(HALOS["even"])
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
            wall, cpu = timed(open_block_source(Path(tmp) / name), region, args.repeat)
            print(f"{name:20s} even box: wall {wall * 1000:.1f} ms, CPU {cpu * 1000:.1f} ms")


if __name__ == "__main__":
    main()
