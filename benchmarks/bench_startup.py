"""A small input (one block) against one bare ``segment()`` call, run by the library (in the
caller's process) and by the command (in its own process up to ``QUICK_REGION_VOXELS``,
else in its job process), and where the rest of the command's time goes; issue #24: at
most 1.2x the bare call.

    python benchmarks/bench_startup.py              # the sample (64x128x128), 5 repeats
    python benchmarks/bench_startup.py --repeats 3 --shape 32 64 64 --shape 64 256 256
    python benchmarks/bench_startup.py --compare ../old/src   # and another checkout's command

Each repeat runs, one after the other: the bare call (``segment()`` on the array in memory,
in a process of its own, timed around the call alone: no imports, no I/O), then in the same
process the library's run (``segment_blockwise_zarr``, as ``WatershedPostProcessor.process``
calls it: reading, the kernel, writing the labels and their pyramid), the bare script's
read, call and write in that process (a library call's own baseline, as both read and
write zarr) and ``WARM_CALLS`` more library calls, each against a bare call made just
before it (a process that segments many small inputs: both calls warm), the bare script
(the same call as a user's script would make it: a fresh Python that imports, reads the
array, segments it and writes the labels to zarr, timed from its start to its exit, which
skips the interpreter's teardown as the command does), the command
``napari-mutex-watershed segment`` from its start to its exit, and the imports of each of
the command's two processes alone (``python -c "import ..."``, wall time). The command's
time is split by its JSON progress lines: start-up (to the run's first line: Python and the
imports of its processes, the checks, the output's creation, the plan handed over),
reading and writing, the kernel (both from the run's summary) and the end (from the last
line to the exit). Ratios are against the bare call of the same repeat; as the kernel's own
time swings with the load, the summary also gives the time outside the kernel (the command's
wall time less its kernel time) over the median bare call. A fixed start-up weighs more the
smaller the input: below about 2^20 voxels no command can come within 1.2x of the call in
memory, so there the bare script is the baseline (both per shape in the last table). CPU
seconds hold better under load: the command's (both processes, from the kernel's accounting
of reaped children) against the bare call's ``segment()`` (``time.process_time``); on a quiet
2-core machine the wall ratio is at most about the CPU ratio, as the two processes'
start-ups overlap. ``--compare SRC`` also runs the library's call (after a bare call of its
own) and the command of another checkout (``PYTHONPATH=SRC``, e.g. the code before a
change). The bytecode of both is written first, as an installed copy has it
(``bench_blockwise.write_bytecode``). ``--work DIR`` puts the inputs and outputs there.
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
from bench_blockwise import timed_lines, write_bytecode

#: What each process of the command imports before it works (the job: ``job.start``).
COMMAND_IMPORTS = ("napari_mutex_watershed.cli", "napari_mutex_watershed.blockwise.launch",
                   "napari_mutex_watershed.storage.inputs",
                   "napari_mutex_watershed.storage.outputs")
JOB_IMPORTS = ("napari_mutex_watershed.blockwise.job", "napari_mutex_watershed.blockwise.whole")


def reading(path: str) -> str:
    """Python that imports what one ``segment()`` needs and opens the input at ``path``
    (``source``) with its parameters (``parameters``)."""
    return ("import json, os, time, zarr; from napari_mutex_watershed import segment, "
            "WatershedParameters; from napari_mutex_watershed.storage import open_affinities; "
            f"source = zarr.open_array({path!r}); "
            f"parameters = WatershedParameters(offsets=open_affinities({path!r}).offsets); ")


#: What a user's script does with the input ``reading`` opened: read, segment, write.
SCRIPT = ("source = zarr.open_array({path!r}, mode='r'); "
          "labels = segment(source[...], parameters); "
          "zarr.open_array({output!r}, mode='w', shape=labels.shape, dtype=labels.dtype, "
          "chunks=source.chunks[1:])[...] = labels")


def remove_run(output: Path) -> None:
    """An earlier run's container and the folder of its work and lock: each run starts from
    nothing."""
    from napari_mutex_watershed.blockwise.launch import work_dir_for

    shutil.rmtree(output.parent, ignore_errors=True)
    shutil.rmtree(work_dir_for(output).parent, ignore_errors=True)


#: Library calls after the first in a ``bare_call`` process, each against a bare call just
#: before it: a process that segments many small inputs (a sweep, a script's loop) pays
#: its imports and first-call costs once, and its bare calls are warm too.
WARM_CALLS = 5


def bare_call(path: str, output: Path, source: str | None = None
              ) -> tuple[float, float, float, float, float]:
    """Wall and CPU seconds of one ``segment()`` on the whole array, in a fresh process; then,
    in the same process, the wall seconds of the library's run of the same input into
    ``output`` (``segment_blockwise_zarr``, what ``WatershedPostProcessor.process`` calls;
    ``source``: the package from there), of the same read, call and write as a script
    makes them (``bare_script``'s, without its start-up), and the median ratio of
    ``WARM_CALLS`` more library calls (new outputs) to a bare call before each."""
    script_output = output.parent.parent / "in_process.zarr"
    warm_outputs = output.parent.parent / "warm"
    code = reading(path) + (
        "from napari_mutex_watershed.blockwise.launch import segment_blockwise_zarr; "
        "import statistics; "
        "data = source[...]; t, c = time.perf_counter(), time.process_time(); "
        "segment(data, parameters); call = [time.perf_counter() - t, time.process_time() - c]; "
        f"t = time.perf_counter(); segment_blockwise_zarr({path!r}, {str(output)!r}, "
        "parameters, progress='none'); library = time.perf_counter() - t; "
        f"t = time.perf_counter(); {SCRIPT.format(path=path, output=str(script_output))}; "
        "in_process = time.perf_counter() - t; warm = []\n"
        f"for k in range({WARM_CALLS}):\n"
        "    t = time.perf_counter(); segment(data, parameters); bare = time.perf_counter() - t\n"
        f"    t = time.perf_counter(); segment_blockwise_zarr({path!r}, "
        f"'{warm_outputs}/' + str(k) + '.zarr/labels', parameters, progress='none')\n"
        "    warm.append((time.perf_counter() - t) / bare)\n"
        "print(json.dumps([*call, library, in_process, statistics.median(warm)]))")
    remove_run(output)
    shutil.rmtree(script_output, ignore_errors=True)
    shutil.rmtree(warm_outputs, ignore_errors=True)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={**os.environ, **({"PYTHONPATH": source} if source
                                                             else {})})
    return tuple(json.loads(done.stdout.splitlines()[-1]))


def bare_script(path: str, output: Path) -> float:
    """Wall seconds of a fresh Python that reads the array, segments it and writes the labels
    (one zarr array, the input's chunks), from its start to its exit (``os._exit``: no
    teardown, as the command)."""
    code = reading(path) + SCRIPT.format(path=path, output=str(output)) + "; os._exit(0)"
    shutil.rmtree(output, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


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
    remove_run(output)
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


def spread(values, unit="x") -> str:
    return (f"{statistics.median(values):.2f}{unit} ({min(values):.2f} to "
            f"{max(values):.2f}{unit})")


def bench_shape(path: str, work: Path, repeats: int, compare: str | None) -> dict:
    """The repeats on one input: a row each, then the summary; returns its medians for the
    table across shapes."""
    print("| repeat | load (1 min) | bare call s | library call s | library ratio | "
          "library / script in process | warm library ratio | bare script s | command s | ratio | "
          "ratio to the script | bare call CPU s | command CPU s | CPU ratio | start-up s | "
          "read and write s | kernel s | end s | command process imports s | "
          "job process imports s |" + (" SRC library ratio | SRC library / script in "
                                       "process | SRC warm library ratio | SRC command s | "
                                       "SRC ratio | SRC start-up s | SRC CPU ratio |"
                                       if compare else ""))
    print("|---" * (27 if compare else 20) + "|", flush=True)
    runs = {"": [], "SRC ": []}
    bares, scripts, to_script, cpu_ratios = [], [], [], {"": [], "SRC ": []}
    libraries, their_libraries, their_to_script = [], [], []
    to_in_process, their_to_in_process = [], []
    warm_libraries, their_warm_libraries = [], []
    for repeat in range(1, repeats + 1):
        bare, bare_cpu, library, in_process, warm = bare_call(
            path, work / "library.zarr" / "labels")
        libraries.append(library / bare)
        warm_libraries.append(warm)
        to_in_process.append(library / in_process)
        script = bare_script(path, work / "script.zarr")
        run = command(path, work / "out.zarr" / "labels")
        imports = import_seconds(COMMAND_IMPORTS), import_seconds(JOB_IMPORTS)
        bares.append(bare)
        scripts.append(script)
        to_script.append(run["wall"] / script)
        runs[""].append(run)
        cpu_ratios[""].append(run["cpu"] / bare_cpu)
        other = ""
        if compare:
            their_bare, _, their_library, their_in_process, their_warm = bare_call(
                path, work / "library.zarr" / "labels", compare)
            their_libraries.append(their_library / their_bare)
            their_to_in_process.append(their_library / their_in_process)
            their_warm_libraries.append(their_warm)
            theirs = command(path, work / "out.zarr" / "labels", compare)
            runs["SRC "].append(theirs)
            their_to_script.append(theirs["wall"] / script)
            cpu_ratios["SRC "].append(theirs["cpu"] / bare_cpu)
            other = (f" {their_libraries[-1]:.2f}x | {their_to_in_process[-1]:.2f}x | "
                     f"{their_warm:.2f}x | "
                     f"{theirs['wall']:.2f} | "
                     f"{theirs['wall'] / bare:.2f}x | "
                     f"{theirs['start-up']:.2f} | {cpu_ratios['SRC '][-1]:.2f}x |")
        print(f"| {repeat} | {psutil.getloadavg()[0]:.1f} | {bare:.2f} | {library:.2f} | "
              f"{libraries[-1]:.2f}x | {to_in_process[-1]:.2f}x | {warm:.2f}x | {script:.2f} | "
              f"{run['wall']:.2f} | {run['wall'] / bare:.2f}x | {to_script[-1]:.2f}x | "
              f"{bare_cpu:.2f} | {run['cpu']:.2f} | {cpu_ratios[''][-1]:.2f}x | "
              f"{run['start-up']:.2f} | {run['read and write']:.2f} | {run['kernel']:.2f} | "
              f"{run['end']:.2f} | {imports[0]:.2f} | {imports[1]:.2f} |{other}", flush=True)
    bare = statistics.median(bares)
    ratios = {name: [r["wall"] / b for r, b in zip(done, bares)] for name, done in runs.items()}
    outside = {name: [r["wall"] - r["kernel"] for r in done] for name, done in runs.items()}
    for name in (name for name, done in runs.items() if done):
        print(f"\n{name}command / bare call: median {spread(ratios[name])} over "
              f"{len(ratios[name])} repeats; outside the kernel {spread(outside[name], ' s')}, "
              f"1 + that / the median bare call ({bare:.2f} s) = "
              f"{1 + statistics.median(outside[name]) / bare:.2f}x; CPU: median "
              f"{spread(cpu_ratios[name])} (target at most 1.2x)")
    print(f"command / bare script: median {spread(to_script)}")
    if their_to_script:
        print(f"SRC command / bare script: median {spread(their_to_script)}")
    print(f"library call / bare call (the same process): median {spread(libraries)} "
          "(target at most 1.2x)")
    print(f"library call / the script's read, call and write in its process: median "
          f"{spread(to_in_process)}")
    print(f"later library calls / a bare call before each ({WARM_CALLS} in each repeat's "
          f"process; their median): median {spread(warm_libraries)}")
    if their_libraries:
        print(f"SRC library call / its bare call: median {spread(their_libraries)}; / the "
              f"script's in its process: median {spread(their_to_in_process)}; later calls: "
              f"median {spread(their_warm_libraries)}")
    return {"bare call s": bare, "library / the call": spread(libraries),
            "library / the script in process": spread(to_in_process),
            "later library calls / the call": spread(warm_libraries),
            **({"SRC library / the call": spread(their_libraries),
                "SRC library / the script in process": spread(their_to_in_process),
                "SRC later library calls / the call": spread(their_warm_libraries)}
               if compare else {}),
            "bare script s": statistics.median(scripts),
            "command s": statistics.median(r["wall"] for r in runs[""]),
            "to the call": spread(ratios[""]), "to the script": spread(to_script),
            "outside the kernel": spread(outside[""], " s"),
            **({"SRC to the script": spread(their_to_script)} if their_to_script else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shape", type=int, nargs=3, action="append",
                        help="sample shape, repeat for several (default: the sample's, "
                        "64 128 128)")
    parser.add_argument("--compare", metavar="SRC",
                        help="also the library call and the command of the package in SRC "
                        "(another checkout's src)")
    parser.add_argument("--work", metavar="DIR",
                        help="the folder for the inputs and outputs (default: the system's "
                        "temporary folder); a small run's time outside the kernel is mostly "
                        "file operations, whose cost differs between file systems")
    args = parser.parse_args()
    write_bytecode(args.compare)
    from napari_mutex_watershed.synthetic import write_sample

    work = Path(tempfile.mkdtemp(prefix="bench_startup_", dir=args.work))
    summaries = {}
    try:
        for shape in args.shape or [None]:
            sample = write_sample(work / "sample.zarr", *([shape] if shape else []),
                                  overwrite=True)
            path = str(sample["affinities"])
            print(f"\ninput: {path}, shape {sample['shape']}\n")
            summaries[sample["shape"][1:]] = bench_shape(path, work, args.repeats,
                                                         args.compare)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if len(summaries) > 1:
        names = list(next(iter(summaries.values())))
        print("\n| shape | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 1) + "|")
        for shape, summary in summaries.items():
            print(f"| {' x '.join(map(str, shape))} | " + " | ".join(
                f"{v:.2f}" if isinstance(v, float) else v for v in summary.values()) + " |")


if __name__ == "__main__":
    main()
