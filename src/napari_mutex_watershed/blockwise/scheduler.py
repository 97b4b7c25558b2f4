"""SLURM and LSF: the worker command built from the block size, and the run's jobs cancelled
when the run ends, however it ends.

``--cluster slurm`` or ``--cluster lsf`` turns into a worker-command template (see
``cluster.ClusterWorkerLauncher``) with one core, the memory a worker peaks at for the
plan's blocks and a time limit, each of which ``--cluster-option KEY=VALUE`` overrides.
Every job of one attempt of a run carries one name, ``mws-<hash of the work folder>-<token>``.
The job process starts a *guard* (this file, run as a script) that leaves the process tree
at once, so a cancel of the tree does not reach it; when the job process is gone, for
whatever reason (done, failed, SIGTERM, SIGKILL), the guard cancels every job of that name
(``scancel --name``, ``bkill -J``), running or pending.

Only the standard library at the top: the guard runs this file with ``python -I`` and
imports nothing of the package (it waits for the whole run).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

SCHEDULERS = ("slurm", "lsf")


def _invalid(message: str):
    """The project's error for a malformed request (imported late: the guard runs this file
    without the package)."""
    from napari_mutex_watershed.errors import InvalidInputError

    return InvalidInputError(message)

#: The per-attempt part of the jobs' name, set by the job process for its workers.
ATTEMPT_ENV = "NAPARI_MUTEX_WATERSHED_CLUSTER_ATTEMPT"
#: Prefix of every job name of ours.
NAME_PREFIX = "mws"

# ------------------------------------------------------------------ measured (docs/blockwise.md)
#: Peak RSS of a worker: BASE_MB plus this many bytes per voxel and channel of the odd
#: blocks' kernel box (an interior block and its widest halo). Fitted to workers of 64^3 and
#: 128^3 blocks with the default offsets (519 and 2,110 MiB), on the high side of both; the
#: request is MEMORY_MARGIN times that, in steps of 256 MB.
BASE_MB = 140
BYTES_PER_VOXEL_CHANNEL = 100
MEMORY_MARGIN = 1.5
#: CPU seconds of one block per million voxels of that box and six channels (measured 1.7
#: at 64^3, 2.7 at 128^3). The time limit is TIME_FACTOR times a worker's share of the
#: blocks, plus STARTUP_SECONDS, at least MIN_MINUTES: a worker lives for its step, and one of
#: the odd step also waits for the even blocks it reads.
SECONDS_PER_MVOXEL = 3.0
TIME_FACTOR = 10
STARTUP_SECONDS = 300
MIN_MINUTES = 15

#: ``--cluster-option`` keys, with the names each scheduler knows them by too.
OPTION_ALIASES = {
    "cores": "cores", "cpus": "cores",
    "memory": "memory", "mem": "memory",
    "time": "time", "walltime": "time",
    "partition": "partition", "queue": "partition",
    "account": "account", "project": "account",
    "extra": "extra",
}


@dataclass(frozen=True)
class WorkerResources:
    """What one worker job asks for."""

    cores: int = 1
    memory_mb: int = 1024
    minutes: int = MIN_MINUTES
    partition: str | None = None
    account: str | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)


def kernel_voxels(block_size, halo) -> int:
    """Voxels of a block with ``halo`` on every side (an interior block: the largest)."""
    return int(math.prod(b + 2 * h for b, h in zip(block_size, halo)))


def estimate(block_size, halo, channels: int, num_blocks: int,
             workers: int) -> WorkerResources:
    """Cores, memory and time of one worker for blocks of ``block_size`` with the odd blocks'
    ``halo`` over ``channels`` affinity channels; ``num_blocks`` in the grid, ``workers``
    per step."""
    voxels = kernel_voxels(block_size, halo)
    peak_mb = BASE_MB + BYTES_PER_VOXEL_CHANNEL * voxels * channels / 2**20
    memory_mb = 256 * math.ceil(peak_mb * MEMORY_MARGIN / 256)
    per_block = SECONDS_PER_MVOXEL * voxels * channels / 6 / 1e6
    share = math.ceil(num_blocks / max(workers, 1))
    seconds = STARTUP_SECONDS + TIME_FACTOR * per_block * share
    return WorkerResources(memory_mb=memory_mb,
                           minutes=max(MIN_MINUTES, math.ceil(seconds / 60)))


def parse_memory_mb(text: str) -> int:
    """``8000`` (MB), ``8000M``, ``8G``, ``1.5T`` -> MB."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", str(text), re.IGNORECASE)
    if not match:
        raise _invalid(f"memory must look like 8000, 8000M or 8G, got {text!r}")
    scale = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}[match[2].upper()]
    value = math.ceil(float(match[1]) * scale)
    if value < 1:
        raise _invalid(f"memory must be at least 1 MB, got {text!r}")
    return value


def parse_minutes(text: str) -> int:
    """``90`` (minutes), ``1:30`` (hours:minutes) or ``1:30:00`` -> minutes."""
    parts = str(text).strip().split(":")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise _invalid(f"time must be minutes, H:MM or H:MM:SS, got {text!r}")
    numbers = [int(p) for p in parts]
    if len(numbers) == 1:
        minutes = numbers[0]
    else:
        minutes = numbers[0] * 60 + numbers[1] + (numbers[2] > 0 if len(numbers) == 3 else 0)
    if minutes < 1:
        raise _invalid(f"time must be at least 1 minute, got {text!r}")
    return minutes


def parse_options(options) -> dict[str, str]:
    """``["partition=short", "mem=8G"]`` (or a dict) -> ``{"partition": "short", "memory":
    "8G"}``, with the aliases resolved."""
    if options is None:
        return {}
    items = options.items() if isinstance(options, dict) else (
        _split_option(text) for text in options)
    parsed = {}
    for key, value in items:
        name = OPTION_ALIASES.get(str(key).strip().lower().replace("_", "-"))
        if name is None:
            raise _invalid(
                f"unknown cluster option {key!r}; known: cores, memory, time, partition, "
                "account, extra")
        parsed[name] = str(value)
    return parsed


def _split_option(text: str) -> tuple[str, str]:
    key, sep, value = str(text).partition("=")
    if not sep or not key.strip():
        raise _invalid(f"a cluster option is KEY=VALUE, got {text!r}")
    return key, value


def apply_options(resources: WorkerResources, options: dict[str, str]) -> WorkerResources:
    """The estimate with the user's overrides on top."""
    changes = {}
    if "cores" in options:
        if not options["cores"].strip().isdigit() or int(options["cores"]) < 1:
            raise _invalid(f"cores must be a whole number >= 1, got {options['cores']!r}")
        changes["cores"] = int(options["cores"])
    if "memory" in options:
        changes["memory_mb"] = parse_memory_mb(options["memory"])
    if "time" in options:
        changes["minutes"] = parse_minutes(options["time"])
    for key in ("partition", "account"):
        if key in options:
            changes[key] = options[key].strip() or None
    if "extra" in options:
        try:
            changes["extra"] = tuple(shlex.split(options["extra"]))
        except ValueError as error:
            raise _invalid(f"extra arguments {options['extra']!r}: {error}") from None
    return replace(resources, **changes)


def worker_template(scheduler: str, resources: WorkerResources) -> str:
    """The worker-command template for ``scheduler``: it submits one worker, waits for it to
    end and exits with its code. ``{name}``, ``{logs}`` and ``{quoted_command}`` are filled
    in by the launcher."""
    r = resources
    if scheduler == "slurm":
        words = ["sbatch", "--wait", "--export=ALL", "--job-name={name}",
                 f"--cpus-per-task={r.cores}", f"--mem={r.memory_mb}M", f"--time={r.minutes}",
                 "--output={logs}/slurm-%j.out"]
        if r.partition:
            words.append(f"--partition={shlex.quote(r.partition)}")
        if r.account:
            words.append(f"--account={shlex.quote(r.account)}")
        words += [_escaped(x) for x in r.extra]
        words += ["--wrap", "{quoted_command}"]
    elif scheduler == "lsf":
        hours, minutes = divmod(r.minutes, 60)
        words = ["bsub", "-K", "-J", "{name}", "-n", str(r.cores),
                 "-M", f"{r.memory_mb}MB", "-R", shlex.quote(f"rusage[mem={r.memory_mb}MB]"),
                 "-W", f"{hours}:{minutes:02d}", "-o", "{logs}/lsf-%J.out"]
        if r.partition:
            words += ["-q", shlex.quote(r.partition)]
        if r.account:
            words += ["-P", shlex.quote(r.account)]
        words += [_escaped(x) for x in r.extra]
        words.append("{quoted_command}")
    else:
        raise _invalid(f"the cluster is slurm or lsf, got {scheduler!r}")
    return " ".join(words)


def _escaped(word: str) -> str:
    """A shell word whose braces survive ``str.format``."""
    return shlex.quote(word).replace("{", "{{").replace("}", "}}")


def cluster_template(scheduler: str, options, *, block_size, halo, channels: int,
                     num_blocks: int, workers: int) -> str:
    """The worker-command template for ``--cluster scheduler`` with ``--cluster-option``s."""
    if scheduler not in SCHEDULERS:
        raise _invalid(f"the cluster is slurm or lsf, got {scheduler!r}")
    resources = estimate(block_size, halo, channels, num_blocks, workers)
    return worker_template(scheduler, apply_options(resources, parse_options(options)))


# ------------------------------------------------------------------ the run's jobs
def run_prefix(work_dir: str | Path) -> str:
    """``mws-<hash>``: the start of the name of every job of the run in ``work_dir``."""
    digest = hashlib.sha1(str(Path(work_dir).resolve()).encode()).hexdigest()[:10]
    return f"{NAME_PREFIX}-{digest}"


def job_name(work_dir: str | Path) -> str:
    """The name of this attempt's jobs: the run's prefix and the job process's token."""
    return f"{run_prefix(work_dir)}-{os.environ.get(ATTEMPT_ENV) or 'x'}"


def cancel_command(scheduler: str, name: str) -> list[str]:
    if scheduler == "slurm":
        return ["scancel", "--name", name]
    if scheduler == "lsf":
        return ["bkill", "-J", name, "0"]
    raise ValueError(f"unknown scheduler {scheduler!r}")


def cancel_jobs(scheduler: str, name: str, timeout: float = 60.0) -> bool:
    """Cancel every job named ``name``, running or pending; True if the command ran."""
    try:
        result = subprocess.run(cancel_command(scheduler, name), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                timeout=timeout, text=True, errors="replace", check=False)
    except (OSError, subprocess.SubprocessError) as error:
        print(f"cannot cancel the cluster jobs {name}: {error}", file=sys.stderr)
        return False
    return result.returncode == 0


def start_attempt(scheduler: str, work_dir: str | Path, log_path: str | Path) -> str:
    """In the job process: name this attempt's jobs (``ATTEMPT_ENV``, inherited by the
    workers that submit them) and start the guard that cancels them once this process is
    gone. Returns the name."""
    os.environ[ATTEMPT_ENV] = os.urandom(4).hex()
    name = job_name(work_dir)
    start_guard(scheduler, name, os.getpid(), log_path)
    return name


def start_guard(scheduler: str, name: str, pid: int, log_path: str | Path) -> None:
    """Run this file as the guard of ``pid``; it forks away at once, so it is nobody's child
    by the time a cancel looks for children (returns when it has)."""
    try:
        with open(log_path, "a") as log:
            process = subprocess.Popen(
                [sys.executable, "-I", str(Path(__file__).resolve()), "guard", scheduler, name,
                 str(pid)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True,  # no Ctrl-C from the terminal
            )
        process.wait()
    except OSError as error:  # the run goes on; the job process still cancels at its end
        print(f"cannot start the guard of the cluster jobs {name}: {error}", file=sys.stderr)


def guard(scheduler: str, name: str, pid: int, poll: float = 0.2) -> None:
    """Wait until process ``pid`` is gone, then cancel the jobs named ``name``; once more a
    little later, for a submission that was under way (``stop`` kills within a second)."""
    started = _start_time(pid)
    while started is not None and _start_time(pid) == started:
        time.sleep(poll)
    cancel_jobs(scheduler, name)
    time.sleep(3.0)
    cancel_jobs(scheduler, name)


def _start_time(pid: int) -> str | None:
    """The start time of a live process (None when it is gone or a zombie); it tells a
    reused pid from ours."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        if sys.platform.startswith("linux"):
            return None
        try:  # not Linux: no zombie check, no pid reuse check
            os.kill(pid, 0)
            return "alive"
        except OSError:
            return None
    return None if fields[0] in ("Z", "X") else fields[19]


def _main(argv) -> int:
    if len(argv) != 4 or argv[0] != "guard":
        print("usage: scheduler.py guard slurm|lsf NAME PID", file=sys.stderr)
        return 2
    if os.fork():  # the parent returns to the job process; the guard is orphaned
        return 0
    guard(argv[1], argv[2], int(argv[3]))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
