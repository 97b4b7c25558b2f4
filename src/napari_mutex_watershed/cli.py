"""``napari-mutex-watershed``: the engine with a command-line front.

    napari-mutex-watershed sample sample.zarr
    napari-mutex-watershed segment sample.zarr/affinities sample.zarr/labels --workers 2

Only the standard library at the top: ``segment`` starts its job process first, so the
job's imports overlap ours (numpy, pydantic, zarr) instead of following them; a small
region needs no job process (``is_quick_region``).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from .errors import Cancelled, MutexWatershedError


def _offsets(text: str) -> list[tuple[int, ...]]:
    try:
        return [tuple(int(v) for v in item.split(",")) for item in text.split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"offsets look like '1,0,0 0,1,0 0,0,1', got {text!r}"
        ) from None


class Parser(argparse.ArgumentParser):
    """argparse with one line for a refusal (usage stays in --help)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _at_least(minimum, kind=int, what="a number"):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value != value:  # NaN
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        if not value >= minimum:
            raise argparse.ArgumentTypeError(f"{text} is below {minimum}")
        return value
    return parse


def _positive_seconds(text: str) -> float:
    value = _at_least(0.0, float, "a number of seconds")(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="napari-mutex-watershed",
        description="Mutex watershed segmentation of affinities stored in zarr.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="print tracebacks and the job's log to the terminal")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    sample = commands.add_parser("sample", help="write sample affinities and ground truth")
    sample.add_argument("output", help="zarr container to create, e.g. sample.zarr")
    sample.add_argument("--shape", type=_at_least(1), nargs="+", default=[64, 128, 128],
                        help="volume shape in voxels, 2 or 3 values (default 64 128 128)")
    sample.add_argument("--seed", type=_at_least(0), default=0)
    sample.add_argument("--noise", type=_at_least(0.0, float), default=0.1,
                        help="standard deviation of the noise on the affinities (default 0.1)")
    sample.add_argument("--uint8", action="store_true", help="store affinities as uint8")
    sample.add_argument("--overwrite", action="store_true")

    run = commands.add_parser("segment", help="segment affinities blockwise into labels")
    run.add_argument("input", help="affinities array, e.g. sample.zarr/affinities")
    run.add_argument("output", help="labels array to create, e.g. sample.zarr/labels")
    run.add_argument("--params", type=Path, help="parameters JSON (flags below override it)")
    run.add_argument("--mask", metavar="PATH",
                     help="array on the affinities' voxel grid (any format the input may have): "
                     "voxels where it is 0 stay 0")
    run.add_argument("--seeds", metavar="PATH",
                     help="integer array on the affinities' voxel grid: each non-zero id is one "
                     "object with that id, across blocks")
    tuning = run.add_argument_group("parameters (see docs/parameters.md)")
    tuning.add_argument("--offsets", type=_offsets,
                        help="one per channel, e.g. '1,0,0 0,1,0 0,0,1' (default: from the input)")
    tuning.add_argument("--bias", type=float, nargs="+",
                        help="one bias for all offsets or one each")
    tuning.add_argument("--bias-short", type=float, help="bias of nearest-neighbour offsets")
    tuning.add_argument("--bias-long", type=float, help="bias of long-range offsets")
    tuning.add_argument("--threshold", type=float)
    tuning.add_argument("--sigma", type=float)
    tuning.add_argument("--min-size", type=int)
    tuning.add_argument("--strides", type=int, nargs="+")
    tuning.add_argument("--randomized-strides", action="store_true", default=None)
    tuning.add_argument("--seed", type=int)
    tuning.add_argument("--invert", action="store_true", default=None)
    tuning.add_argument("--channels", type=int, nargs="+")
    tuning.add_argument("--context", type=int, nargs="+", help="halo in voxels per axis")
    blocks = run.add_argument_group("blockwise execution")
    blocks.add_argument("--workers", type=_at_least(1), default=2,
                        help="worker processes (default 2)")
    blocks.add_argument("--block-size", type=_at_least(1), nargs="+",
                        help="block shape in voxels (default: chosen from the region, so a "
                        "worker's memory does not grow with it; docs/blockwise.md)")
    blocks.add_argument("--roi", type=int, nargs="+", metavar="N",
                        help="offset then shape in voxels, e.g. 0 0 0 128 256 256")
    blocks.add_argument("--progress", choices=["bar", "json", "none"], default="bar")
    blocks.add_argument("--worker-command",
                        help="template that launches a worker, with {command} in it, e.g. "
                        "'sbatch --wait --wrap \"{command}\"'")
    blocks.add_argument("--cluster", choices=["slurm", "lsf"],
                        help="workers as SLURM or LSF jobs, with cores, memory and a time limit "
                        "for the block size (see docs/blockwise.md, Cluster workers)")
    blocks.add_argument("--cluster-option", action="append", metavar="KEY=VALUE",
                        help="override what --cluster asks for: cores, memory (8G), time "
                        "(minutes or H:MM), partition (LSF: queue), account (LSF: project), "
                        "extra (more scheduler arguments); repeatable")
    blocks.add_argument("--max-retries", type=_at_least(0), default=2,
                        help="tries of a failed block after the first (default 2)")
    blocks.add_argument("--timeout", type=_positive_seconds,
                        help="seconds before a block is retried, counting its wait for a free "
                        "worker slot (at most about one block's time)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing output")
    run.add_argument("--zarr-format", type=int, choices=(2, 3),
                     help="OME-Zarr labels on zarr v3 (0.5, default) or v2 (0.4, for zarr-python "
                     "2 readers); an existing container keeps its own format")

    sweep = commands.add_parser(
        "sweep", help="segment a region with a grid of parameters and score each against "
        "ground truth (see docs/sweep.md)")
    sweep.add_argument("input", help="affinities array, e.g. sample.zarr/affinities")
    sweep.add_argument("--gt", required=True,
                       help="ground-truth labels array, e.g. sample.zarr/ground_truth; "
                       "0 = unlabelled (not scored), so sparse annotations work")
    sweep.add_argument("--roi", type=int, nargs="+", metavar="N",
                       help="offset then shape in voxels, e.g. 0 0 0 32 64 64 "
                       "(default: the whole volume)")
    sweep.add_argument("--params", type=Path,
                       help="parameters JSON the sweep starts from (default: defaults, "
                       "offsets from the input)")
    sweep.add_argument("--bias", nargs="+", metavar="V", default=None,
                       help="uniform biases to try: numbers and/or ranges start:stop:step "
                       "(default 0.1 0.25 0.5 0.75 0.9, or the --params file's bias when it "
                       "sets one)")
    sweep.add_argument("--threshold", nargs="+", metavar="V",
                       help="thresholds to try (default: only the base value)")
    sweep.add_argument("--min-size", nargs="+", metavar="N",
                       help="minimum sizes to try (default: only the base value)")
    sweep.add_argument("--workers", type=_at_least(1), default=2,
                       help="settings run in parallel (worker processes, default 2)")
    sweep.add_argument("--csv", type=Path, help="also write the table to this CSV file (an "
                       "existing file only if it is an earlier sweep's table)")
    return parser


PARAMETER_FLAGS = ("offsets", "bias", "bias_short", "bias_long", "threshold", "sigma",
                   "min_size", "strides", "randomized_strides", "seed", "invert", "channels",
                   "context")


def parameters_from(args) -> dict:
    """The parameters file's values (if any) with the flags on top: a dict, which the run
    checks before it opens anything and completes with the input's offsets."""
    values = file_parameters(args)
    for name in PARAMETER_FLAGS:
        value = getattr(args, name)
        if value is not None:
            values[name] = value[0] if name == "bias" and len(value) == 1 else value
    if args.bias is None and (args.bias_short is not None or args.bias_long is not None):
        uniform = values.pop("bias", None)  # it would replace the flags' biases
        if isinstance(uniform, list):
            from .errors import InvalidInputError

            raise InvalidInputError(
                f"the parameters file {args.params} sets a bias per offset, which --bias-short "
                "and --bias-long cannot change: give --bias, or edit the file")
        for name in ("bias_short", "bias_long"):  # the file's bias for the other
            if uniform is not None and getattr(args, name) is None:
                values[name] = uniform
    return values


def file_parameters(args) -> dict:
    """What ``--params`` names, checked on its own (so a problem names the file)."""
    from .parameters import checked_before_offsets, read_parameters_file

    if not args.params:
        return {}
    return checked_before_offsets(read_parameters_file(args.params),
                                  f"parameters file {args.params}")


def command_sample(args) -> int:
    import numpy as np

    from .synthetic import write_sample

    sample = write_sample(args.output, args.shape, args.seed, args.noise,
                          np.uint8 if args.uint8 else np.float32, overwrite=args.overwrite)
    print(f"affinities: {sample['affinities']}  shape {sample['shape']}, "
          f"offsets {sample['offsets']}")
    print(f"ground truth: {sample['ground_truth']}  ({sample['objects']} objects)")
    return 0


def is_quick_region(args) -> bool:
    """Is the region (``--roi``, else the input's, from its metadata) one the command
    segments in its own process (``supervise.is_quick``)? Only the standard
    library: it decides whether the job process starts first."""
    import math

    from .blockwise.supervise import is_quick
    from .regions import split_roi
    from .storage.paths import DEFAULT_INPUT, stored_voxels

    if args.worker_command or args.cluster:
        return False
    if args.roi:
        offset, shape = split_roi(args.roi)
        voxels = math.prod(shape) if len(offset) == len(shape) else None
    else:
        voxels = stored_voxels(args.input, DEFAULT_INPUT)
    return voxels is not None and is_quick(voxels)


def command_segment(args) -> int:
    import os

    from .blockwise.supervise import DEBUG_ENV, JobProcess

    if args.debug:  # for the job process, whenever it starts
        os.environ[DEBUG_ENV] = "1"
    # first: it imports while we validate (none for a region this process segments itself)
    job = None if is_quick_region(args) else JobProcess()
    try:
        from .blockwise.launch import ALREADY_COMPLETE, segment_blockwise_zarr
        from .regions import split_roi

        parameters = parameters_from(args)
        roi = split_roi(args.roi)
    except BaseException:
        if job is not None:
            job.abandon()
        raise
    status = sys.stderr if args.progress == "json" else sys.stdout
    said = []

    def notify(line: str) -> None:
        said.append(line)
        print(line, file=status, flush=True)

    output = segment_blockwise_zarr(
        args.input,
        args.output,
        parameters,
        job=job,
        notify=notify,
        block_size=tuple(args.block_size) if args.block_size else None,
        num_workers=args.workers,
        roi=roi,
        overwrite=args.overwrite,
        progress=args.progress,
        worker_command=args.worker_command,
        cluster=args.cluster,
        cluster_options=args.cluster_option,
        max_retries=args.max_retries,
        timeout=args.timeout,
        zarr_format=args.zarr_format,
        mask_path=args.mask,
        seeds_path=args.seeds,
    )
    # ``output`` is level 0; its folder is the OME-Zarr labels image users open
    if not any(line.startswith(ALREADY_COMPLETE) for line in said):
        print(f"labels written to {output.parent}", file=status)
    return 0


def command_sweep(args) -> int:
    import signal
    import time

    from .regions import split_roi
    from .sweep import best, format_table, run_sweep, write_csv
    from .sweep.inputs import open_sweep_data, settings_for
    from .sweep.table import check_csv_target

    if args.csv is not None:  # before the work it would lose
        check_csv_target(args.csv, {"input": args.input, "ground truth": args.gt})
    named = file_parameters(args)
    data = open_sweep_data(args.input, args.gt, named, split_roi(args.roi))
    settings = settings_for(data.base, args.bias, args.threshold, args.min_size,
                            keep_bias=any(k in named for k in ("bias", "bias_short",
                                                               "bias_long")))
    workers = min(args.workers, len(settings))
    print(f"sweeping {_count(len(settings), 'setting')} on {' x '.join(map(str, data.shape))} "
          f"voxels at {data.offset} ({data.labelled} labelled) with "
          f"{_count(workers, 'worker')}", file=sys.stderr)
    started = time.perf_counter()

    def stop(_signum, _frame):  # a scheduler's or timeout's SIGTERM: as Ctrl-C, workers too
        raise Cancelled("stopped: the settings under way were dropped")

    previous = signal.signal(signal.SIGTERM, stop)
    # workers killed while they compute leave their pool's semaphores to Python's resource
    # tracker (a process that starts with the pool and takes these flags), which removes them
    # and warns about each on our stderr: the one line a stop prints is ours
    quiet = "ignore:resource_tracker:UserWarning"
    sys.warnoptions.append(quiet)
    try:
        results = run_sweep(data.affinities, settings, data.ground_truth, workers=args.workers,
                            keep_labels=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.warnoptions.remove(quiet)
    print(format_table(results))
    winner = best(results)
    if winner is not None:
        print(f"best: {winner.name} (adapted Rand error {winner.adapted_rand_error:.4f}); "
              f"{time.perf_counter() - started:.1f} s")
    if args.csv:
        print(f"table written to {write_csv(results, args.csv)}")
    return 0 if all(r.error is None for r in results) else 1


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'s' if n != 1 else ''}"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"sample": command_sample, "segment": command_segment,
                "sweep": command_sweep}[args.command](args)
    except Cancelled as error:
        print(f"error: {error}", file=sys.stderr)
        return 130
    except MutexWatershedError as error:
        if args.debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as error:  # a full disk before a run, or while a sample is written
        from .blockwise.disk import no_space

        if not no_space(error):
            return unexpected(error, args)
        where = f" at {error.filename}" if error.filename else ""
        print(f"error: no space left on device{where}: free some space, then run the same "
              "command again", file=sys.stderr)
        return 1
    except Exception as error:  # a bug or an environment problem: details to a log
        return unexpected(error, args)


def unexpected(error: Exception, args) -> int:
    """A bug or an environment problem: one line, the details in a log of its own."""
    if args.debug:
        raise error
    print(f"error: unexpected {type(error).__name__}: {error} "
          f"(details: {log_traceback(error)})", file=sys.stderr)
    return 1


def log_traceback(error: BaseException) -> Path:
    """Write the traceback of ``error`` to a log file of its own; return its path."""
    import os
    import tempfile
    import time

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "napari-mutex-watershed" / "logs"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir())
    path = folder / f"cli-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.write_text(" ".join(sys.argv) + "\n" + "".join(
        traceback.format_exception(type(error), error, error.__traceback__)))
    return path


def command() -> None:
    """The console script: ``main``, then the process ends at once (``exit_at_once``)."""
    from .processes import exit_at_once

    exit_at_once(main())


if __name__ == "__main__":
    command()
