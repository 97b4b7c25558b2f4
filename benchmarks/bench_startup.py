"""A small input (one block, segmented in the job process) against one bare ``segment()``
call, and where the rest of the command's time goes; issue #24: at most 1.2x the bare call.

    python benchmarks/bench_startup.py              # the sample (64x128x128), 5 repeats
    python benchmarks/bench_startup.py --repeats 9 --shape 32 128 128
    python benchmarks/bench_startup.py --compare ../old/src   # and another checkout's command

Each repeat runs, one after the other: the bare call (``segment()`` on the array in memory,
in a process of its own, timed around the call alone: no imports, no I/O), the command
``napari-mutex-watershed segment`` from its start to its exit, and the imports of each of
the command's two processes alone (``python -c "import ..."``, wall time). The command's
time is split by its JSON progress lines: start-up (to the job's first line: both
processes' Python and imports, the checks, the output's creation, the plan handed over),
reading and writing, the kernel (both from the job's summary) and the end (from the last
line to the exit). Ratios are against the bare call of the same repeat; as the kernel's own
time swings with the load, the summary also gives the time outside the kernel (the command's
wall time less its kernel time) over the median bare call. CPU seconds hold better under
load: the command's (both processes, from the kernel's accounting of reaped children)
against the bare call's ``segment()`` (``time.process_time``); on a quiet 2-core machine the
wall ratio is at most about the CPU ratio, as the two processes' start-ups overlap. ``--compare SRC``
also runs the command of another checkout (``PYTHONPATH=SRC``, e.g. the code before a change).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from bench_blockwise import timed_lines

#: What each process of the command imports before it works (the job: ``job.start``).
COMMAND_IMPORTS = ("napari_mutex_watershed.cli", "napari_mutex_watershed.blockwise.launch",
                   "napari_mutex_watershed.storage.inputs",
                   "napari_mutex_watershed.storage.outputs")
JOB_IMPORTS = ("napari_mutex_watershed.blockwise.job", "napari_mutex_watershed.blockwise.whole")


def bare_call(path: str) -> tuple[float, float]:
    """Wall and CPU seconds of one ``segment()`` on the whole array, in a fresh process."""
    code = ("import json, time, zarr; from napari_mutex_watershed import segment, "
            "WatershedParameters; from napari_mutex_watershed.storage import open_affinities; "
            f"a = open_affinities({path!r}); data = zarr.open_array({path!r})[...]; "
            "p = WatershedParameters(offsets=a.offsets); "
            "t, c = time.perf_counter(), time.process_time(); segment(data, p); "
            "print(json.dumps([time.perf_counter() - t, time.process_time() - c]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return tuple(json.loads(done.stdout.splitlines()[-1]))


def children_cpu() -> float:
    """CPU seconds of every child this process has reaped (and of theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def import_seconds(modules) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import " + ", ".join(modules)], check=True)
    return time.perf_counter() - started


def command(path: str, output: Path, source: str | None = None) -> dict:
    """The command's wall time split by its progress lines (``source``: the package from
    there, for it and its job process)."""
    shutil.rmtree(output.parent, ignore_errors=True)
    shutil.rmtree(output.parent.with_name(output.parent.name + ".mutex_watershed"),
                  ignore_errors=True)
    saved = os.environ.get("PYTHONPATH")
    if source:
        os.environ["PYTHONPATH"] = source
    try:
        cpu = children_cpu()
        # nothing polls it (bench_blockwise's memory sampling does)
        seconds, lines, _ = timed_lines([sys.executable, "-m", "napari_mutex_watershed.cli",
                                         "segment", path, str(output), "--progress", "json"])
        cpu = children_cpu() - cpu
    finally:
        if source:
            os.environ.pop("PYTHONPATH")
            if saved is not None:
                os.environ["PYTHONPATH"] = saved
    progress = [(t, json.loads(line)) for t, line in lines if line.startswith("{")]
    summary = progress[-1][1]
    if summary.get("blocks") != 1:
        raise SystemExit(f"{path} is not one block: pick a smaller --shape")
    return {"wall": seconds, "cpu": cpu, "start-up": progress[0][0],
            "read and write": summary["read_and_write_seconds"],
            "kernel": summary["kernel_seconds"], "end": seconds - progress[-1][0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shape", type=int, nargs=3, default=None,
                        help="sample shape (default: the sample's, 64 128 128)")
    parser.add_argument("--compare", metavar="SRC",
                        help="also the command of the package in SRC (another checkout's src)")
    args = parser.parse_args()
    from napari_mutex_watershed.synthetic import write_sample

    work = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    try:
        sample = write_sample(work / "sample.zarr", *([args.shape] if args.shape else []))
        path = str(sample["affinities"])
        print(f"input: {path}, shape {sample['shape']}\n")
        print("| repeat | load (1 min) | bare call s | command s | ratio | bare call CPU s | "
              "command CPU s | CPU ratio | start-up s | read and write s | kernel s | end s | "
              "command process imports s | "
              "job process imports s |" + (" SRC command s | SRC ratio | SRC start-up s | "
                                           "SRC CPU ratio |"
                                           if args.compare else ""))
        print("|---" * (17 if args.compare else 14) + "|", flush=True)
        ratios, compared, bares, outside = [], [], [], {"": [], "SRC ": []}
        cpu_ratios = {"": [], "SRC ": []}
        for repeat in range(1, args.repeats + 1):
            bare, bare_cpu = bare_call(path)
            run = command(path, work / "out.zarr" / "labels")
            cpu_ratios[""].append(run["cpu"] / bare_cpu)
            imports = import_seconds(COMMAND_IMPORTS), import_seconds(JOB_IMPORTS)
            ratios.append(run["wall"] / bare)
            bares.append(bare)
            outside[""].append(run["wall"] - run["kernel"])
            other = ""
            if args.compare:
                theirs = command(path, work / "out.zarr" / "labels", str(args.compare))
                compared.append(theirs["wall"] / bare)
                outside["SRC "].append(theirs["wall"] - theirs["kernel"])
                cpu_ratios["SRC "].append(theirs["cpu"] / bare_cpu)
                other = (f" {theirs['wall']:.2f} | {compared[-1]:.2f}x | "
                         f"{theirs['start-up']:.2f} | {cpu_ratios['SRC '][-1]:.2f}x |")
            print(f"| {repeat} | {psutil.getloadavg()[0]:.1f} | {bare:.2f} | {run['wall']:.2f} | "
                  f"{ratios[-1]:.2f}x | {bare_cpu:.2f} | {run['cpu']:.2f} | "
                  f"{cpu_ratios[''][-1]:.2f}x | {run['start-up']:.2f} | {run['read and write']:.2f} | "
                  f"{run['kernel']:.2f} | {run['end']:.2f} | {imports[0]:.2f} | "
                  f"{imports[1]:.2f} |{other}", flush=True)
        bare = statistics.median(bares)
        for name, values in (("", ratios), ("SRC ", compared)):
            if values:
                extra = outside[name]
                print(f"\n{name}command / bare call: median {statistics.median(values):.2f}x, "
                      f"{min(values):.2f} to {max(values):.2f}x over {len(values)} repeats; "
                      f"outside the kernel {statistics.median(extra):.2f} s ({min(extra):.2f} to "
                      f"{max(extra):.2f}), 1 + that / the median bare call ({bare:.2f} s) = "
                      f"{1 + statistics.median(extra) / bare:.2f}x; CPU: median "
                      f"{statistics.median(cpu_ratios[name]):.2f}x ({min(cpu_ratios[name]):.2f} "
                      f"to {max(cpu_ratios[name]):.2f}) (target at most 1.2x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
