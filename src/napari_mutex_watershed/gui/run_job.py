"""Full blockwise runs from napari: the CLI as a background job, its progress, cancel, result.

The job is the command users run on a cluster,
``python -m napari_mutex_watershed.cli segment INPUT OUTPUT --params P --progress json ...``,
started as a separate OS process in a process group of its own, at a lower CPU and I/O
priority, so:

- napari stays responsive (mwatershed holds the GIL; daisy runs its own scheduler),
- Cancel signals the whole group (SIGTERM, then SIGKILL after ``KILL_AFTER`` seconds): daisy
  has no cancel of its own, and no worker is left behind,
- rerunning the same command resumes (finished blocks are skipped).

Two layers of code:

- ``Job``: the process and two reader threads that only push its stdout/stderr lines into a
  queue (no Qt, no napari). ``Job.poll()`` is called from the main thread.
- ``FullRunController``: the widget's "Full run" section (controls, QTimer polling the job on
  the main thread, napari progress bar, notifications, the result Labels layer). Layers are
  only touched there, on the main thread.

An in-memory affinities layer is first copied to a zarr array inside the output container
(``<container>/.napari_input/<dataset>``) together with a hash of its content, so a rerun on
unchanged data reuses the copy and can resume. A layer read from a zarr array (by this
plugin's reader, which records ``metadata["source"]``) is read in place.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import processes
from ..attributes import COMPLETE_ATTR, PARAMETERS_ATTR
from ..parameters import WatershedParameters
from .callback_time import excluded, recorded
from .layers import BLOCK_SIZE_KEY, COMMAND_KEY, INPUT_KEY, OUTPUT_KEY, level0
from .lifecycle import disconnect_all

#: Name of the output array when the user does not choose one.
DEFAULT_OUTPUT_NAME = "labels_mws"
#: Where copies of in-memory affinities go, inside the output container.
INPUT_COPY_DIR = ".napari_input"
#: Attribute of such a copy: hash of the layer data it was made from.
CONTENT_ATTR = "napari_content_hash"
#: Output folder of runs on in-memory data (default: the user data directory).
DATA_DIR_ENV = "NAPARI_MUTEX_WATERSHED_DATA_DIR"
#: Seconds between SIGTERM and SIGKILL of the job's process group.
KILL_AFTER = 1.0
#: The job runs this much "nicer" than napari, so the UI wins the CPU when cores are scarce.
NICENESS = 10

# ---------------------------------------------------------------------------- paths
def data_dir() -> Path:
    """Folder for the output of runs on in-memory layers."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override)
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-mutex-watershed", appauthor=False))


def safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._")
    return cleaned or "layer"


def zarr_source(layer) -> Path | None:
    """The zarr affinities array ``layer`` shows, if it can be read in place; else None.

    Candidates: ``metadata["source"]`` (set by this plugin's reader to the array path) and
    ``layer.source.path``. The array must open as affinities and match the layer's shape
    and dtype (a layer whose data was replaced is not read from its old file).
    """
    from ..storage import open_affinities

    candidates = [layer.metadata.get("source")]
    source = getattr(layer, "source", None)
    candidates.append(getattr(source, "path", None))
    data = level0(layer)
    for candidate in candidates:
        if not candidate:
            continue
        path = Path(str(candidate))
        if not path.is_dir() or not any(p.endswith((".zarr", ".zarr/")) for p in path.parts):
            continue
        try:
            affinities = open_affinities(path)
        except Exception:  # not an affinities array (a container, OME group, N5, ...)
            continue
        if tuple(affinities.array.shape) == tuple(data.shape) and np.dtype(
            affinities.array.dtype
        ) == np.dtype(data.dtype):
            return affinities.path
    return None


def default_output(layer) -> Path:
    """``<container>.zarr/labels_mws`` beside zarr input, else a container in the data dir."""
    from ..storage import split_path

    source = zarr_source(layer)
    if source is not None:
        container, _ = split_path(source, "affinities")
        return container / DEFAULT_OUTPUT_NAME
    return data_dir() / "runs" / f"{safe_name(layer.name)}.zarr" / DEFAULT_OUTPUT_NAME


def input_copy_path(output: Path) -> Path:
    from ..storage import split_path

    container, dataset = split_path(output, DEFAULT_OUTPUT_NAME)
    return container / INPUT_COPY_DIR / dataset


def default_block_size(ndim: int) -> tuple[int, ...]:
    """The CLI's default (passed explicitly, so the command shown is complete)."""
    from ..blockwise.plan import DEFAULT_BLOCK_SIZE

    return DEFAULT_BLOCK_SIZE[ndim]


# ---------------------------------------------------------------------------- input copies
def _integral(values) -> tuple[int, ...] | None:
    values = [float(v) for v in values]
    if all(v == int(v) for v in values):
        return tuple(int(v) for v in values)
    return None


def world_geometry(layer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(voxel size, offset) for funlib metadata: the layer's scale and translate when they are
    integers (funlib's Coordinate is integral), else unit voxels at the origin. The result
    layer is always placed with the affinities layer's own scale and translate."""
    spatial = level0(layer).ndim - 1
    scale = _integral(layer.scale[1:])
    translate = _integral(layer.translate[1:])
    if scale is None or translate is None or any(s <= 0 for s in scale) or any(
        t % s for t, s in zip(translate, scale)
    ):
        return (1,) * spatial, (0,) * spatial
    return scale, translate


def content_hash(data, offsets, voxel_size, offset) -> str:
    """Hash of the layer data and what is written with it (runs off the main thread)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((tuple(data.shape), str(np.dtype(data.dtype)), [list(o) for o in offsets],
                        list(voxel_size), list(offset))).encode())
    step = max(1, int(2**24 // max(1, np.prod(data.shape[2:]) * data.shape[0])))
    for start in range(0, int(data.shape[1]), step):
        slab = np.ascontiguousarray(np.asarray(data[:, start:start + step]))
        digest.update(memoryview(slab).cast("B"))
    return digest.hexdigest()


def stored_hash(path: Path) -> str | None:
    try:
        import zarr

        return zarr.open_array(str(path), mode="r").attrs.get(CONTENT_ATTR)
    except Exception:
        return None


def write_input_copy(path: Path, data, offsets, voxel_size, offset, token: str) -> Path:
    """Write in-memory affinities for the job (storage.write_affinities), tagged with a hash."""
    import zarr

    from ..storage import write_affinities

    written = write_affinities(path, np.asarray(data), offsets, voxel_size=voxel_size,
                               offset=offset, overwrite=True)
    zarr.open_array(str(written), mode="r+").attrs[CONTENT_ATTR] = token
    return written


# ---------------------------------------------------------------------------- outputs
def output_state(input_path: Path, output: Path, parameters: WatershedParameters,
                 block_size: tuple[int, ...], shape: tuple[int, ...]) -> str:
    """What is at ``output``: 'absent', 'resumable' (an unfinished run of this same job),
    'finished' (this same job, complete) or 'other' (anything else: needs --overwrite)."""
    from ..blockwise.launch import work_dir_for
    from ..blockwise.plan import PLAN_FILE, BlockwisePlan
    from ..storage import DEFAULT_OUTPUT, array_path, output_format, stored_attributes

    location = array_path(output, DEFAULT_OUTPUT)
    if not location.exists():
        return "absent"
    plan_file = work_dir_for(output) / PLAN_FILE
    try:
        previous = BlockwisePlan.load(plan_file).identity()
        expected = BlockwisePlan(
            input_path=str(Path(input_path).resolve()),
            output_path=str(location.resolve() / "0"),  # level 0 of the OME-Zarr labels
            zarr_format=output_format(location),
            work_dir=str(plan_file.parent.resolve()),
            parameters=parameters,
            roi_offset=(0,) * len(shape),
            shape=tuple(shape),
            block_size=tuple(min(b, s) for b, s in zip(block_size, shape)),
        ).identity()
        complete = stored_attributes(location).get(COMPLETE_ATTR)
    except Exception:
        return "other"
    if previous != expected:
        return "other"
    return "finished" if complete else "resumable"


def output_in_use(output: Path) -> str | None:
    """The CLI's own refusal when another run holds ``output``'s lock (``blockwise.lock``),
    e.g. '<output> is in use by pid N (...)'; None when it is free.

    Asked before any dialog and before the input copy is written, so a running job's state
    and input are never touched. Only an existing lock file is probed (taken and released
    at once): nothing is created for an output that was never run.
    """
    try:
        from ..blockwise.launch import work_dir_for
        from ..blockwise.lock import RunLock, lock_path
        from ..errors import OutputInUseError
    except ImportError:  # (a version without run locks)
        return None
    try:
        work_dir = work_dir_for(output)
        if not lock_path(work_dir).exists():
            return None
        with RunLock(work_dir, output):
            return None
    except OutputInUseError as error:
        return str(error)
    except Exception:  # cannot be probed: the job itself says what is wrong
        return None


def is_complete(output: Path) -> bool:
    from ..storage import stored_attributes

    return bool(stored_attributes(output).get(COMPLETE_ATTR))


def open_result(output: Path, complete: bool = True):
    """The output labels as lazy dask arrays, one per pyramid level, so napari shows a large
    result at once (a single array when there is one level); a fresh graph name each time,
    so napari does not serve stale chunks from its cache while blocks are still being
    written. Until the run is complete the lower levels are strided views of level 0: the
    pyramid is the run's last step."""
    import uuid

    from ..storage import labels_levels, open_volume

    levels = open_volume(output).dask_levels(name=f"mutex-watershed-result-{uuid.uuid4().hex}")
    if not complete and len(levels) > 1:
        factors = [factor for _, factor in labels_levels(output)]
        levels = [levels[0][tuple(slice(None, None, f) for f in factor)] for factor in factors]
    return levels if len(levels) > 1 else levels[0]


# ---------------------------------------------------------------------------- the job
def build_command(input_path: Path, output: Path, parameters_file: Path, workers: int,
                  block_size: tuple[int, ...], overwrite: bool = False,
                  max_retries: int | None = None) -> list[str]:
    command = [
        sys.executable, "-m", "napari_mutex_watershed.cli", "segment",
        str(input_path), str(output),
        "--params", str(parameters_file),
        "--workers", str(int(workers)),
        "--block-size", *(str(int(b)) for b in block_size),
        "--progress", "json",
    ]
    if max_retries is not None:
        command += ["--max-retries", str(int(max_retries))]
    if overwrite:
        command.append("--overwrite")
    return command


def shell_command(command: list[str]) -> str:
    """The command as a user would type it (console script instead of python -m)."""
    words = list(command)
    if words[1:3] == ["-m", "napari_mutex_watershed.cli"]:
        words = ["napari-mutex-watershed"] + words[3:]
    return shlex.join(words)


@dataclass
class JobEvent:
    """What ``Job.poll`` reports: a progress line (``progress``) or the end (``finished``)."""

    kind: str  # "progress" | "finished"
    progress: dict = field(default_factory=dict)


class Job:
    """One CLI run in its own process group, read by two threads (no Qt here)."""

    def __init__(self, command: list[str], env: dict | None = None, niceness: int = NICENESS):
        self.command = command
        self.lines: queue.Queue = queue.Queue()
        self.stderr_tail: deque[str] = deque(maxlen=200)
        self.error_lines: list[str] = []
        self.progress: list[dict] = []
        self.cancel_requested = False
        self.cancelled_at: float | None = None
        self.killed = False
        self.returncode: int | None = None
        self._eof = 0
        self._exited_at: float | None = None
        self._family: list = []
        if list(command[1:2]) != ["-m"]:
            raise ValueError("a job is a module run: [python, -m, module, args...]")
        # its own process group (Cancel signals all of it), niced (napari keeps the CPU)
        self.process = processes.start_module(
            command[2], command[3:], niceness=niceness, group=True, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", errors="replace", bufsize=1,
        )
        self.pid = self.process.pid
        for stream, name in ((self.process.stdout, "stdout"), (self.process.stderr, "stderr")):
            threading.Thread(target=self._read, args=(stream, name), daemon=True,
                             name=f"mutex-watershed-job-{name}").start()

    # ------------------------------------------------------------------ reader threads
    def _read(self, stream, name: str) -> None:
        """Only reads lines and queues them: never touches Qt or napari."""
        try:
            for line in stream:
                self.lines.put((name, line.rstrip("\n")))
        except (OSError, ValueError):
            pass
        finally:
            self.lines.put((name, None))

    # ------------------------------------------------------------------ main thread
    @property
    def running(self) -> bool:
        return self.returncode is None

    def poll(self) -> list[JobEvent]:
        """Drain the queued lines; report the end once the process exited and the pipes
        are closed (or 2 s after the exit, in case a stray grandchild holds them)."""
        events: list[JobEvent] = []
        if self.returncode is not None:
            return events
        while True:
            try:
                name, line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._eof += 1
            elif name == "stdout":
                message = _parse_progress(line)
                if message is not None:
                    message["received"] = time.perf_counter()  # (our clock, not the job's)
                    self.progress.append(message)
                    events.append(JobEvent("progress", message))
            else:
                self.stderr_tail.append(line)
                if line.startswith("error:"):
                    self.error_lines.append(line)
        self._escalate()
        code = self.process.poll()
        if code is not None:
            self._exited_at = self._exited_at or time.monotonic()
            if self._eof >= 2 or time.monotonic() - self._exited_at > 2.0:
                self._finish(code)
                events.append(JobEvent("finished"))
        return events

    def _finish(self, code: int) -> None:
        self.returncode = code
        self._kill_everything()  # whatever is left of the group (nothing, normally)

    def _kill_everything(self) -> None:
        """SIGKILL the process group and every descendant seen when cancel began."""
        self._signal_group(processes.KILL_SIGNAL)
        processes.kill(self._family)

    def cancel(self) -> None:
        """SIGTERM to the whole process group; SIGKILL follows after ``KILL_AFTER`` s."""
        if self.returncode is not None or self.cancel_requested:
            return
        self.cancel_requested = True
        self.cancelled_at = time.monotonic()
        self._family = processes.descendants(self.pid)
        self._signal_group(signal.SIGTERM)

    def _escalate(self) -> None:
        if (self.cancel_requested and not self.killed and self.cancelled_at is not None
                and time.monotonic() - self.cancelled_at >= KILL_AFTER):
            self.killed = True
            self._kill_everything()

    def kill_now(self, grace: float = KILL_AFTER) -> None:
        """Blocking cancel (shutdown): SIGTERM, wait up to ``grace`` s, SIGKILL, reap."""
        if self.returncode is not None:
            return
        self.cancel()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        self.killed = True
        self._finish(self.process.poll() if self.process.poll() is not None else -9)
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass

    def _signal_group(self, sig) -> None:
        """The job's process group (its group id is its pid); Windows, which has no groups:
        its process tree, killed (terminate is a kill there)."""
        if hasattr(os, "killpg"):
            processes.signal_group(self.pid, sig)
        else:
            processes.kill(processes.tree(self.pid))

    def error_message(self) -> str:
        """The job's own one-line message (first ``error: ...`` line), without 'error: '."""
        if self.error_lines:
            return self.error_lines[0][len("error:"):].strip()
        tail = [line for line in self.stderr_tail if line.strip()]
        last = tail[-1].strip() if tail else ""
        return f"the job stopped with exit code {self.returncode}" + (f": {last}" if last else "")


def _parse_progress(line: str) -> dict | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict) or "phase" not in message:
        return None
    return message


class ProgressTally:
    """All steps of a run (even blocks, odd blocks, stitch, relabel) as one bar and one line.

    The tally keeps the latest line of every step instead of showing one line at a time, so
    it holds whatever order the lines come in.
    """

    BLOCK_STEPS = ("even", "odd", "relabel")

    def __init__(self):
        self.latest: dict[str, dict] = {}

    def add(self, message: dict) -> None:
        self.latest[message["phase"]] = message

    @property
    def blocks(self) -> int:
        return next((int(m["total"]) for p, m in self.latest.items() if p != "stitch"), 0)

    def value(self) -> tuple[int, int]:
        """(value, total), or (-1, -1) before the block count is known."""
        if not self.blocks:
            return -1, -1
        total = 3 * self.blocks + 1
        if "done" in self.latest:
            return total, total
        done = sum(int(self.latest[p]["done"]) for p in self.BLOCK_STEPS if p in self.latest)
        stitched = int(bool(self.latest.get("stitch", {}).get("done")))
        return min(done + stitched, total - 1), total

    def describe(self) -> str:
        if "done" in self.latest:
            return "done"
        if "relabel" not in self.latest and "stitch" in self.latest:
            return "stitched" if self.latest["stitch"]["done"] else "stitching blocks"
        running = [p for p in self.BLOCK_STEPS if p in self.latest]
        if "relabel" in running:
            running = ["relabel"]
        return ", ".join(_describe_step(self.latest[p]) for p in running) or "starting"


def _describe_step(message: dict) -> str:
    text = f"{message['phase']}: {message['done']}/{message['total']} blocks"
    if message.get("skipped"):
        text += f" ({message['skipped']} already done)"
    if message.get("failed"):
        text += f", {message['failed']} failed"
    return text


# ---------------------------------------------------------------------------- the request
@dataclass
class RunRequest:
    layer_name: str
    placement: dict  # scale, translate, units of the result layer (the affinities' spatial)
    parameters: WatershedParameters
    workers: int
    block_size: tuple[int, ...]
    output: Path
    source: Path | None  # zarr array read in place, or None: an in-memory layer to copy
    shape: tuple[int, ...]
    voxel_size: tuple[int, ...] = ()
    offset: tuple[int, ...] = ()
    input_path: Path | None = None
    token: str | None = None
    copy_current: bool = False
    overwrite: bool = False
    data: Any = None


# ---------------------------------------------------------------------------- the UI section
class FullRunController:
    """The "Full run" section of ``MutexWatershedWidget``: controls and job handling.

    ``owner`` is the widget: its ``check()`` gives the parameters, ``affinities`` the layer,
    ``viewer`` the viewer, ``set_parameters`` restores parameters. Everything here runs on
    the main thread; only file hashing/copying runs on a helper thread.
    """

    poll_ms = 50
    refresh_seconds = 1.0  # while relabelling, re-read the result at most this often

    def __init__(self, owner) -> None:
        from magicgui.widgets import Label, LineEdit, PushButton, SpinBox
        from qtpy.QtCore import QTimer
        from qtpy.QtWidgets import QSizePolicy

        self._owner = weakref.ref(owner)
        self.command: list[str] = []
        self.job: Job | None = None
        self.last_job: Job | None = None  # the latest job, kept after it ended (inspection)
        self.request: RunRequest | None = None
        self.result_layer = None
        self.max_retries: int | None = None  # None: the CLI's default
        self.last_error: str | None = None
        self._pbar = None
        self._tally = ProgressTally()
        self._pbar_text = ""
        self._future: concurrent.futures.Future | None = None
        self._next = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="mutex-watershed-prepare")
        self._aborted = False
        self._last_refresh = 0.0
        self._pending: dict | None = None
        self._parameters_file: Path | None = None

        self.header = Label(name="full_run_header", value="Full run: the whole volume, blockwise")
        self.header.label = ""  # (magicgui turns label="" in the constructor into the name)
        self.header.native.setStyleSheet("font-weight: bold; margin-top: 6px;")
        self.workers = SpinBox(
            name="workers", label="Workers", value=2, min=1, max=256,
            tooltip="Worker processes of the blockwise run (each segments one block at a time).",
        )
        self.block_size = LineEdit(
            name="block_size", label="Block size",
            tooltip="Block shape in voxels, e.g. 64, 64, 64. Empty: 64^3 in 3D, 512^2 in 2D. "
            "Bigger blocks are slower per block (time grows faster than the volume) but "
            "stitch less.",
        )
        self.block_size.native.setPlaceholderText("empty: 64, 64, 64 (3D) / 512, 512 (2D)")
        self.output = LineEdit(
            name="output_path", label="Output",
            tooltip="The labels array to write, inside a .zarr container, e.g. "
            "volume.zarr/labels_mws. Empty: the default shown in grey.",
        )
        self.browse = PushButton(name="output_browse", text="Choose output...")
        self.run_button = PushButton(
            name="run_button", text="Run",
            tooltip="Segment the whole affinities layer blockwise in a separate process "
            "(the napari-mutex-watershed command). Progress shows in the activity dock.",
        )
        self.run_status = Label(name="run_status", value="")
        self.run_status.label = ""
        status = self.run_status.native
        status.setWordWrap(True)
        # a fixed size: new texts must not resize the dock (and the canvas)
        status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self._status_height = status.fontMetrics().lineSpacing() * 3 + 4
        status.setFixedHeight(self._status_height)
        self.use_result = PushButton(
            name="use_result_parameters", text="Use parameters of selected result",
            tooltip="Load the parameters (and block size) a selected result layer was made "
            "with into the controls.",
        )
        self.use_result.enabled = False
        self.widgets = [self.header, self.workers, self.block_size, self.output, self.browse,
                        self.run_button, self.run_status, self.use_result]

        self._timer = QTimer(owner.native)
        self._timer.setInterval(self.poll_ms)
        self._timer.timeout.connect(self._tick)
        self._kill_timer = QTimer(owner.native)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._tick)

        self.run_button.changed.connect(self._on_run_clicked)
        self.workers.changed.connect(self._remember)
        self.block_size.changed.connect(self._remember)
        self.browse.changed.connect(self._browse)
        self.use_result.changed.connect(self.use_selected_result)
        selection = owner.viewer.layers.selection.events.active
        selection.connect(self._on_active_layer)
        owner.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self._connections = [(selection, self._on_active_layer),
                             (owner.viewer.layers.events.inserted, self._on_layer_inserted)]
        self.update_default_output()

    # ------------------------------------------------------------------ small helpers
    @property
    def owner(self):
        owner = self._owner()
        if owner is None:
            raise RuntimeError("the widget is gone")
        return owner

    def _remember(self, *_args) -> None:
        owner = self._owner()
        timer = getattr(owner, "_save_timer", None)
        if timer is not None:
            timer.start()  # the widget saves its remembered values shortly after

    @property
    def running(self) -> bool:
        return self.job is not None or self._future is not None or self._next is not None

    def _status(self, text: str, tooltip: str | None = None, whole: bool = False) -> None:
        """Show ``text`` in the status line; ``whole``: a refusal or failure, shown in full
        however many lines it takes (other texts keep the fixed height: a new text must not
        resize the dock, and the canvas, while a run or a preview goes on)."""
        self.run_status.value = text
        self.run_status.tooltip = tooltip if tooltip is not None else text
        label = self.run_status.native
        needed = label.heightForWidth(label.width()) if whole and label.width() > 0 else -1
        label.setFixedHeight(max(self._status_height, needed + 4))

    def update_default_output(self, *_args) -> None:
        layer = self.owner.affinities.value
        text = ""
        if layer is not None:
            try:
                text = str(default_output(layer))
            except Exception:
                text = ""
        self.output.native.setPlaceholderText(text or "volume.zarr/labels_mws")

    def output_path(self) -> Path:
        from ..storage import split_path

        text = self.output.value.strip()
        layer = self.owner.affinities.value
        path = Path(text).expanduser() if text else default_output(layer)
        split_path(path, DEFAULT_OUTPUT_NAME)  # raises when not inside a .zarr container
        if str(path).rstrip("/").endswith(".zarr"):
            path = path / DEFAULT_OUTPUT_NAME
        return path.absolute()

    def block_size_value(self, ndim: int) -> tuple[int, ...]:
        text = self.block_size.value.strip().strip("[]()")
        if not text:
            return default_block_size(ndim)
        try:
            values = tuple(int(v) for v in re.split(r"[,;\s]+", text) if v)
        except ValueError:
            raise ValueError(f"Block size: cannot read {self.block_size.value!r}") from None
        if len(values) == 1:
            values = values * ndim
        if len(values) != ndim or any(v < 1 for v in values):
            raise ValueError(f"Block size: give {ndim} positive integers, e.g. "
                             f"{', '.join(map(str, default_block_size(ndim)))}")
        return values

    # ------------------------------------------------------------------ dialogs (tests patch)
    def confirm_overwrite(self, path: Path) -> bool:
        """Ask before replacing an existing output."""
        from qtpy.QtWidgets import QMessageBox

        answer = QMessageBox.question(
            self.owner.native, "Replace existing output?",
            f"{path} already exists (another run, other parameters or other data).\n\n"
            "Replace it?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def confirm_resume(self, path: Path, finished: bool) -> str:
        """'resume' (or load, if finished), 'overwrite' or 'cancel'."""
        from qtpy.QtWidgets import QMessageBox

        box = QMessageBox(self.owner.native)
        box.setWindowTitle("Existing run")
        if finished:
            box.setText(f"{path} was already computed with these parameters.")
            resume = box.addButton("Open it", QMessageBox.ButtonRole.AcceptRole)
        else:
            box.setText(f"{path} is an unfinished run with these parameters.")
            resume = box.addButton("Resume", QMessageBox.ButtonRole.AcceptRole)
        again = box.addButton("Start over", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        clicked = box.clickedButton()
        return "resume" if clicked is resume else "overwrite" if clicked is again else "cancel"

    def _browse(self, *_args) -> None:
        from qtpy.QtWidgets import QFileDialog

        start = self.output.value or self.output.native.placeholderText()
        path, _ = QFileDialog.getSaveFileName(
            self.owner.native, "Output labels (inside a .zarr container)", start,
            "zarr container (*.zarr)")
        if path:
            if ".zarr" not in path:
                path += ".zarr"
            self.output.value = path

    # ------------------------------------------------------------------ starting
    @recorded("full_run.run_clicked")
    def _on_run_clicked(self, *_args) -> None:
        if self.running:
            self.cancel()
        else:
            self.start()

    @recorded("full_run.start")
    def start(self) -> bool:
        """Validate, then prepare the input (off the main thread if a copy is needed), ask
        about an existing output, and launch the job. False if nothing was started."""
        from napari.utils.notifications import show_error

        if self.running:
            return False
        owner = self.owner
        parameters, problem = owner.check()
        layer = owner.affinities.value
        if parameters is None or layer is None:
            self._status(f"Cannot run: {problem}")
            return False
        data = level0(layer)
        shape = tuple(int(s) for s in data.shape[1:])
        try:
            block_size = self.block_size_value(len(shape))
            output = self.output_path()
        except Exception as error:  # ValueError, InvalidInputError
            self._status(f"Cannot run: {error}")
            show_error(f"Mutex watershed: {error}")
            return False
        if owner.mask.value is not None or owner.seeds.value is not None:
            from napari.utils.notifications import show_warning

            show_warning("Mutex watershed: the mask and seeds apply to the preview only; "
                         "the full run segments the whole volume without them.")
        source = zarr_source(layer)
        request = RunRequest(
            layer_name=layer.name,
            placement={"scale": tuple(layer.scale[1:]), "translate": tuple(layer.translate[1:]),
                       "units": tuple(layer.units)[1:]},
            parameters=parameters, workers=int(self.workers.value),
            block_size=block_size, output=output, source=source, shape=shape,
        )
        self.request = request
        self.last_error = None
        self._aborted = False
        self.run_button.text = "Cancel"
        if source is not None:
            request.input_path = source
            self._decide()
        else:
            request.voxel_size, request.offset = world_geometry(layer)
            request.input_path = input_copy_path(output)
            request.data = data
            offsets = parameters.offsets
            self._status("Preparing: checking the layer data ...")
            self._in_thread(
                lambda: (content_hash(data, offsets, request.voxel_size, request.offset),
                         stored_hash(request.input_path)),
                self._after_hash,
            )
        return True

    def _in_thread(self, function, then) -> None:
        self._future = self._executor.submit(function)
        self._next = then
        self._timer.start()

    def _after_hash(self, result) -> None:
        token, stored = result
        self.request.token = token
        self.request.copy_current = stored == token
        self._decide()

    def _decide(self) -> None:
        request = self.request
        if self._aborted:
            return self._reset("Cancelled before the run started.")
        busy = output_in_use(request.output)
        if busy is not None:  # the CLI's refusal, in full (no dialog, nothing written)
            return self._reset(f"Not started: {busy}", error=True)
        state = output_state(request.input_path, request.output, request.parameters,
                             request.block_size, request.shape)
        if request.source is None and not request.copy_current and state != "absent":
            state = "other"  # the layer's data changed since that run
        if state in ("resumable", "finished"):
            choice = self.confirm_resume(request.output, finished=state == "finished")
            if choice == "cancel":
                return self._reset("Not started.")
            request.overwrite = choice == "overwrite"
        elif state == "other":
            if not self.confirm_overwrite(request.output):
                return self._reset(f"Not started: {request.output} exists.")
            request.overwrite = True
        if request.source is None and not request.copy_current:
            self._status("Preparing: writing the layer data to zarr ...")
            self._in_thread(
                lambda: write_input_copy(request.input_path, request.data,
                                         request.parameters.offsets, request.voxel_size,
                                         request.offset, request.token),
                lambda _path: self._launch(),
            )
        else:
            self._launch()

    def _launch(self) -> None:
        request = self.request
        if self._aborted:
            return self._reset("Cancelled before the run started.")
        request.data = None  # (copied if it had to be: do not pin the layer's data)
        folder = Path(tempfile.mkdtemp(prefix="napari-mutex-watershed-"))
        self._parameters_file = folder / "parameters.json"
        request.parameters.save(self._parameters_file)
        command = build_command(request.input_path, request.output, self._parameters_file,
                                request.workers, request.block_size, request.overwrite,
                                self.max_retries)
        self.command = command
        try:
            self.job = self.last_job = Job(command)
        except OSError as error:
            return self._reset(f"Could not start the job: {error}", error=True)
        self._last_refresh = 0.0
        self._pending = None
        self._tally = ProgressTally()
        self._status("Running: starting the job ...",
                     tooltip="Equivalent command:\n" + shell_command(command))
        self._timer.start()

    # ------------------------------------------------------------------ running
    @recorded("full_run.tick")
    def _tick(self) -> None:
        if self._future is not None:
            if not self._future.done():
                return
            future, then = self._future, self._next
            self._future = self._next = None
            try:
                value = future.result()
            except Exception as error:
                return self._reset(f"Preparing the input failed: {error}", error=True)
            then(value)
            return
        job = self.job
        if job is None:
            self._timer.stop()
            return
        finished = False
        for event in job.poll():
            if event.kind == "progress":
                self._tally.add(event.progress)
                self._pending = event.progress  # only the newest line is shown
            else:
                finished = True
        if finished:
            self._on_finished()
            return
        # at most one piece of layer or progress-bar work per turn of the event loop, so
        # the UI never does two slow things in a row
        message = self._pending
        if message is not None:
            if (message["phase"] == "relabel" and message["done"]
                    and time.monotonic() - self._last_refresh >= self.refresh_seconds):
                self._last_refresh = time.monotonic()
                self._show_result(complete=False)  # blocks appear as they are relabelled
            else:
                self._pending = None
                self._on_progress()
        if job.cancel_requested and not job.killed:
            remaining = KILL_AFTER - (time.monotonic() - job.cancelled_at)
            if remaining > 0 and not self._kill_timer.isActive():
                self._kill_timer.start(int(remaining * 1000) + 1)

    def _on_progress(self) -> None:
        value, total = self._tally.value()
        text = self._tally.describe()
        if self._pbar is None:
            self._start_progress()
        if self._pbar is not None:
            if total > 0:
                if self._pbar.total != total:
                    self._pbar.total = total
                if value != self._pbar.n:
                    self._pbar.update(value - self._pbar.n)
            description = f"Mutex watershed: {text}"
            if self._pbar_text != description:  # (napari's bar processes events on each)
                self._pbar_text = description
                self._pbar.set_description(description)
        self._status(f"Running: {text}", tooltip=self.run_status.tooltip)

    def _start_progress(self) -> None:
        """The activity dock's progress bar, created with the first progress line (not in
        the same event-loop turn as the process start: each costs tens of ms)."""
        from napari.utils import progress

        self._pbar = progress(total=0, desc="Mutex watershed: starting")
        self._pbar_text = "Mutex watershed: starting"

    def _on_finished(self) -> None:
        from napari.utils.notifications import show_error, show_info

        job, request = self.job, self.request
        self._timer.stop()
        self._kill_timer.stop()
        if job.cancel_requested:
            where = f" at {self._tally.describe()}" if job.progress else ""
            text = (f"Full run cancelled{where}; all processes stopped. Finished blocks are "
                    f"kept in {request.output}: Run again to resume.")
            self._reset(text)
            show_info(text)
        elif job.returncode == 0:
            self._show_result(complete=True)
            seconds = job.progress[-1].get("seconds") if job.progress else None
            took = f" in {seconds:.1f} s" if isinstance(seconds, int | float) else ""
            self._reset(f"Done{took}: {request.output}")
        else:
            message = job.error_message()
            self.last_error = message
            self._reset(f"Failed: {message}", whole=True)
            show_error(f"Mutex watershed run failed: {message}")

    def _show_result(self, complete: bool) -> None:
        """Add (or refresh) the lazy Labels layer of the output, placed like the affinities."""
        request = self.request
        try:
            data = open_result(request.output, complete)
        except Exception:
            return  # not created yet
        multiscale = isinstance(data, list)
        first = level0(data)
        metadata = {
            PARAMETERS_ATTR: json.loads(request.parameters.to_json()),
            BLOCK_SIZE_KEY: list(request.block_size),
            INPUT_KEY: str(request.input_path),
            OUTPUT_KEY: str(request.output),
            COMMAND_KEY: shell_command(self.command),
            COMPLETE_ATTR: bool(complete),
            "source": str(request.output),
        }
        viewer = self.owner.viewer
        existing = self.result_layer
        if existing is None or existing not in viewer.layers:
            existing = next((candidate for candidate in viewer.layers
                             if candidate.metadata.get(OUTPUT_KEY) == str(request.output)), None)
        if existing is not None and existing.ndim == first.ndim and (
                existing.multiscale == multiscale):
            existing.data = data
            existing.metadata = metadata
            existing.scale = request.placement["scale"]
            existing.translate = request.placement["translate"]
            self.result_layer = existing
        else:
            # napari needs 0.15-0.4 s of main-thread time to add a Labels layer (vispy
            # visuals), once per result: recorded apart from this callback's own time
            with excluded("full_run.add_layer"):
                self.result_layer = viewer.add_labels(
                    data, name=request.output.name, metadata=metadata, multiscale=multiscale,
                    **request.placement,
                )

    # ------------------------------------------------------------------ cancel and reset
    @recorded("full_run.cancel")
    def cancel(self) -> None:
        """Stop the job (or its preparation). Non-blocking: the group gets SIGTERM now and
        SIGKILL after ``KILL_AFTER`` s; the end is reported from the timer."""
        if self.job is not None:
            self.job.cancel()
            self._status("Cancelling ...")
            self._timer.start()
            self._kill_timer.start(int(KILL_AFTER * 1000) + 1)
        elif self._future is not None or self._next is not None:
            self._aborted = True
            self._status("Cancelling ...")

    def _reset(self, text: str, error: bool = False, whole: bool = False) -> None:
        from napari.utils.notifications import show_error

        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if self._parameters_file is not None:
            shutil.rmtree(self._parameters_file.parent, ignore_errors=True)
            self._parameters_file = None
        self.job = None
        self._future = self._next = None
        self._timer.stop()
        self.run_button.text = "Run"
        self._status(text, whole=whole or error)
        if error:
            self.last_error = text
            show_error(f"Mutex watershed: {text}")

    def shutdown(self) -> None:
        """The widget goes away: kill the job (blocking, at most about 1 s) and clean up."""
        disconnect_all(self._connections)
        if self.job is not None:
            self.job.kill_now()
        self._aborted = True
        if self._pbar is not None:
            try:
                self._pbar.close()
            except Exception:
                pass
            self._pbar = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ provenance
    @recorded("full_run.active_layer")
    def _on_active_layer(self, _event=None) -> None:
        layer = self.owner.viewer.layers.selection.active
        self.use_result.enabled = bool(layer is not None and layer.metadata.get(PARAMETERS_ATTR))

    @recorded("full_run.layer_inserted")
    def _on_layer_inserted(self, event=None) -> None:
        layer = getattr(event, "value", None)
        if layer is not None and layer.metadata.get(PARAMETERS_ATTR) and layer is not (
            self.result_layer
        ) and not self.running:
            self._status(f"'{layer.name}' carries the parameters it was made with: select it "
                         "and click 'Use parameters of selected result' to load them.")
        self._on_active_layer()

    @recorded("full_run.use_result")
    def use_selected_result(self, *_args, layer=None) -> bool:
        """Load the parameters (and block size) of a result layer into the controls."""
        layer = layer if layer is not None else self.owner.viewer.layers.selection.active
        stored = layer.metadata.get(PARAMETERS_ATTR) if layer is not None else None
        if not stored:
            self._status("Select a result layer (one with mutex_watershed_parameters).")
            return False
        try:
            parameters = WatershedParameters.model_validate(
                json.loads(stored) if isinstance(stored, str) else stored)
        except Exception as error:
            self._status(f"Cannot read the parameters of '{layer.name}': {error}")
            return False
        self.owner.set_parameters(parameters)
        block_size = layer.metadata.get(BLOCK_SIZE_KEY)
        if block_size:
            self.block_size.value = ", ".join(str(int(b)) for b in block_size)
        self._status(f"Loaded the parameters of '{layer.name}'.")
        return True
