"""segment() against a bare mwatershed.agglom call on the same input: wall time and peak memory.

    python benchmarks/bench_segment.py                # sample 128^3 + neuron-label crops 128^3
    python benchmarks/bench_segment.py --size 256     # 256^3 neuron-label crops (minutes, ~8 GB)
    python benchmarks/bench_segment.py --repeats 5 --no-sample

Bare = the affinities converted to float64, the same per-offset biases subtracted in place,
one ``mwatershed.agglom`` call with the same offsets (its labels are neither filtered nor
made consecutive). segment() = the package's engine: validation, weights, kernel, first-voxel
fix, filters and consecutive uint32 relabelling.

Every run happens in a fresh spawned process that loads the prepared float32 input from a
.npy file, resets and records its RSS, runs once and reports the peak RSS (VmHWM, the kernel
counter behind ``getrusage().ru_maxrss``) minus that baseline: the memory the run itself
needed, Rust allocations included (tracemalloc would miss those). ru_maxrss itself is not
usable as is: it also holds the peak of the pre-exec image, and a spawned child is forked from
this (large) parent before it execs. Time is the best of the repeats (bare and segment()
runs interleaved, so load from other processes hits both alike; CPU time is shown too, as
it is less sensitive to such load), memory the largest.

Cases: (a) ``synthetic.sample_volume`` 128^3 (6 offsets); (b) affinities derived from the
real neuron labels in ../shared/data/pinky40_gt_half.npz with ``affinities_from_labels``
(sigma 1, noise 0.1), offsets (1,0,0) (0,1,0) (0,0,1) (3,0,0) (0,9,0) (0,0,9), cropped at
each ``--origin`` (default: the corner 0,0,0, and 0,256,256 where the labels are dense: the
corner crop holds only 2 objects). Skipped with a message when the file is absent.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pinky40_gt_half.npz"
OFFSETS = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (3, 0, 0), (0, 9, 0), (0, 0, 9)]
TARGET_TIME, TARGET_MEMORY = 1.15, 1.3


# ----------------------------------------------------------------------------- children


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Reset this process's RSS high-water mark to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass


def _peak_bytes() -> int:
    """Peak RSS of this process image.

    VmHWM, the counter behind ``getrusage().ru_maxrss``, read for this process image only:
    ru_maxrss also keeps the high-water mark of the image before exec, and a spawned child is
    forked from the parent first, so it would start at the parent's RSS.
    """
    return _status_bytes("VmHWM")


def run_once(mode: str, input_path: str, offsets, parameters_json: str, queue) -> None:
    """Child process: load the input, take the RSS baseline, run ``mode`` once, report."""
    import mwatershed

    from napari_mutex_watershed import WatershedParameters, segment

    parameters = WatershedParameters.model_validate_json(parameters_json)
    kernel_seconds = []
    agglom = mwatershed.agglom

    def timed_agglom(*args, **kwargs):  # segment() calls mwatershed.agglom through the module
        started = time.perf_counter()
        try:
            return agglom(*args, **kwargs)
        finally:
            kernel_seconds.append(time.perf_counter() - started)

    mwatershed.agglom = timed_agglom
    affinities = np.load(input_path)
    _reset_peak()
    baseline, peak_at_baseline = _status_bytes("VmRSS"), _peak_bytes()

    started, cpu_started = time.perf_counter(), time.process_time()
    if mode == "bare":
        weights = affinities.astype(np.float64)
        weights -= parameters.biases().reshape((-1,) + (1,) * (weights.ndim - 1))
        labels = timed_agglom(weights, [list(o) for o in offsets])
        del weights
    else:
        labels = segment(affinities, parameters)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    peak = _peak_bytes()

    n_segments = int(np.count_nonzero(np.unique(labels)))
    queue.put(
        {
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "outside_kernel_seconds": seconds - sum(kernel_seconds),
            "peak_mb": (peak - baseline) / 2**20,
            "floor_mb": max(peak_at_baseline - baseline, 0) / 2**20,
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "n_segments": n_segments,
            "dtype": str(labels.dtype),
        }
    )


def measure(mode: str, input_path: Path, offsets, parameters_json: str) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(
        target=run_once, args=(mode, str(input_path), offsets, parameters_json, queue)
    )
    child.start()
    result = queue.get()
    child.join()
    if child.exitcode:
        raise RuntimeError(f"{mode} run failed with exit code {child.exitcode}")
    return result


# ----------------------------------------------------------------------------- inputs


def sample_input(size: int):
    from napari_mutex_watershed.synthetic import sample_volume

    affinities, _, offsets = sample_volume((size,) * 3)
    return affinities, offsets


def neuron_input(path: Path, size: int, origin: tuple[int, int, int]):
    from napari_mutex_watershed.synthetic import affinities_from_labels

    labels = np.load(path)["labels"]
    crop = labels[tuple(slice(o, o + size) for o in origin)]
    if crop.shape != (size,) * 3:
        raise SystemExit(f"--origin {origin} with --size {size} reaches past {labels.shape}")
    crop = np.ascontiguousarray(crop)
    objects = len(np.unique(crop)) - int((crop == 0).any())
    affinities = affinities_from_labels(crop, OFFSETS, sigma=1, noise=0.1)
    return affinities, list(OFFSETS), objects


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode (default 3)")
    parser.add_argument("--size", type=int, default=128,
                        help="edge of the neuron-label crop (default 128; 256 takes minutes)")
    parser.add_argument("--sample-size", type=int, default=128,
                        help="edge of the synthetic sample volume (default 128)")
    parser.add_argument("--origin", type=int, nargs=3, action="append", metavar=("Z", "Y", "X"),
                        help="corner of a neuron-label crop; repeat for several "
                        "(default: 0 0 0 and 0 256 256)")
    parser.add_argument("--data", type=Path, default=DATA, help="the neuron labels .npz")
    parser.add_argument("--no-sample", action="store_true", help="skip the synthetic case")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from napari_mutex_watershed import WatershedParameters

    cases = []  # (name, affinities, offsets)
    if not args.no_sample:
        affinities, offsets = sample_input(args.sample_size)
        cases.append((f"sample {args.sample_size}^3", affinities, offsets))
    if args.data.exists():
        for origin in args.origin or [(0, 0, 0), (0, 256, 256)]:
            affinities, offsets, objects = neuron_input(args.data, args.size, tuple(origin))
            name = f"neurons {args.size}^3 @{','.join(map(str, origin))} ({objects} obj)"
            cases.append((name, affinities, offsets))
    else:
        print(f"skipping the neuron-label cases: {args.data} not found", file=sys.stderr)

    header = (f"{'case':<34} {'bare s':>7} {'segment s':>9} {'time x':>6} "
              f"{'bare cpu':>7} {'seg cpu':>8} {'cpu x':>6} "
              f"{'bare MB':>8} {'segment MB':>10} {'mem x':>6} "
              f"{'bare +s':>8} {'seg +s':>8}")
    rows, failed = [], False
    with tempfile.TemporaryDirectory() as tmp:
        for name, affinities, offsets in cases:
            input_path = Path(tmp) / "affinities.npy"
            np.save(input_path, affinities)
            parameters_json = WatershedParameters(offsets=offsets).model_dump_json()
            results = {"bare": [], "segment": []}
            for repeat in range(args.repeats):
                # interleaved, order alternating: load from other processes hits both alike
                for mode in ("bare", "segment") if repeat % 2 == 0 else ("segment", "bare"):
                    run = measure(mode, input_path, offsets, parameters_json)
                    results[mode].append(run)
                    if run["floor_mb"] > 0.5 * run["peak_mb"]:
                        print(f"warning: {name} {mode}: the RSS high-water mark was already "
                              f"{run['floor_mb']:.0f} MB above the baseline before the run",
                              file=sys.stderr)
            bare_s = min(r["seconds"] for r in results["bare"])
            seg_s = min(r["seconds"] for r in results["segment"])
            bare_cpu = min(r["cpu_seconds"] for r in results["bare"])
            seg_cpu = min(r["cpu_seconds"] for r in results["segment"])
            bare_mb = max(r["peak_mb"] for r in results["bare"])
            seg_mb = max(r["peak_mb"] for r in results["segment"])
            bare_out = min(r["outside_kernel_seconds"] for r in results["bare"])
            seg_out = min(r["outside_kernel_seconds"] for r in results["segment"])
            time_x, cpu_x, mem_x = seg_s / bare_s, seg_cpu / bare_cpu, seg_mb / bare_mb
            failed |= time_x > TARGET_TIME or mem_x > TARGET_MEMORY
            row = (f"{name:<34} {bare_s:>7.2f} {seg_s:>9.2f} {time_x:>6.2f} "
                   f"{bare_cpu:>7.2f} {seg_cpu:>8.2f} {cpu_x:>6.2f} "
                   f"{bare_mb:>8.0f} {seg_mb:>10.0f} {mem_x:>6.2f} "
                   f"{bare_out:>8.2f} {seg_out:>8.2f}")
            rows.append(row)
            detail = (f"  bare: {results['bare'][0]['n_segments']} raw segments; segment(): "
                      f"{results['segment'][0]['n_segments']} segments, "
                      f"{results['segment'][0]['dtype']}; wall s bare "
                      f"{[round(r['seconds'], 2) for r in results['bare']]} segment "
                      f"{[round(r['seconds'], 2) for r in results['segment']]}")
            print(row, file=sys.stderr)
            print(detail, file=sys.stderr)

    print()
    print(f"{date.today().isoformat()}, {platform.node() or 'unknown host'}, "
          f"{multiprocessing.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}; time: best of {args.repeats} interleaved "
          f"runs (wall and process CPU); memory: largest peak RSS over baseline")
    print(header)
    print("\n".join(rows))
    print("bare +s / seg +s: seconds outside the mwatershed.agglom call (float64 conversion; "
          "validation, weights, filters, relabelling), best run")
    print(f"targets: time x <= {TARGET_TIME}, mem x <= {TARGET_MEMORY}: "
          f"{'FAILED' if failed else 'met'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
