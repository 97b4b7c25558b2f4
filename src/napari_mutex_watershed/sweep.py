"""Parameter sweeps: segment one crop with a grid of settings and score each against a
(sparse) ground truth.

Pure engine level (no Qt or napari import): the napari Sweep section
(``gui/sweep_panel.py``) and the ``sweep`` command of the CLI both use it.

- ``parameter_grid`` builds the settings: a uniform bias (``WatershedParameters.bias``) and,
  optionally, threshold and minimum size values, in a fixed order (bias outermost).
- ``Sweeper`` runs the settings in worker processes ('spawn' context, so it is safe to start
  from a Qt process; mwatershed holds the GIL, so threads would freeze a UI), up to a worker
  count, and keeps the processes warm between sweeps. ``Sweeper.start`` returns a
  ``SweepJob`` to poll (the GUI) and ``run_sweep`` waits for it (the CLI, scripts).
- Scoring uses scikit-image's ``adapted_rand_error`` and ``variation_of_information`` with
  the ground truth's 0 ignored: only labelled voxels count, so a sparse ground truth works.
- ``rank`` orders results by adapted Rand error, ties by grid order, so the best setting is
  deterministic; ``write_csv`` / ``format_table`` give the table.
"""

from __future__ import annotations

import concurrent.futures as futures
import csv
import itertools
import json
import math
import multiprocessing
import os
import queue
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import processes
from .parameters import WatershedParameters

#: DaCapo's watershed post-processor swept these uniform biases.
DEFAULT_BIASES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
#: The parameters a sweep can vary, in grid order (the first varies slowest).
SWEPT = ("bias", "threshold", "min_size")
#: More settings than this is almost certainly a typo in a range (and as many layers).
MAX_SETTINGS = 100
#: Worker processes run this much "nicer" than the caller, so a UI keeps the CPU (a sweep
#: is batch work: nicer than the live preview's worker, which runs at 5).
NICENESS = 10


# ---------------------------------------------------------------------------- the grid
def value_range(start: float, stop: float, step: float) -> list[float]:
    """start, start + step, ... up to and including ``stop`` (within rounding)."""
    if step <= 0:
        raise ValueError(f"a range needs a positive step, got {step:g}")
    if stop < start:
        raise ValueError(f"a range needs start <= stop, got {start:g}:{stop:g}")
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    if count > MAX_SETTINGS:
        raise ValueError(f"{start:g}:{stop:g}:{step:g} has {count} values (at most "
                         f"{MAX_SETTINGS})")
    decimals = max(_decimals(start), _decimals(step))
    return [round(start + i * step, decimals) for i in range(count)]


def _decimals(value: float) -> int:
    text = f"{value:.10f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def parse_values(values, kind: type = float) -> list | None:
    """Values to sweep from text or a sequence; None or empty: not swept.

    Items are numbers or ranges ``start:stop:step`` (stop included), separated by commas or
    spaces: ``"0.1, 0.25, 0.5"``, ``"0.1:0.9:0.2"``, ``["0.2:0.4:0.1", "0.8"]``. Repeated
    values are dropped, the order is kept.
    """
    if values is None:
        return None
    if isinstance(values, str):
        items = values.replace(",", " ").replace(";", " ").split()
    else:
        items = [str(v) for v in values]
        items = [part for item in items for part in item.replace(",", " ").split()]
    out: list = []
    for item in items:
        try:
            parts = [float(p) for p in item.split(":")]
            if len(parts) not in (1, 3):
                raise ValueError
        except ValueError:
            raise ValueError(
                f"cannot read {item!r}: give numbers (0.1, 0.5) or a range start:stop:step"
            ) from None
        try:
            numbers = value_range(*parts) if len(parts) == 3 else parts
        except ValueError as error:
            raise ValueError(f"{item}: {error}") from None
        for number in numbers:
            if kind is int:
                if number != int(number):
                    raise ValueError(f"{item!r}: whole numbers only")
                number = int(number)
            if number not in out:
                out.append(number)
    return out or None


def format_number(value) -> str:
    """0.5 -> '0.50', 0.125 -> '0.125', 20 -> '20' (names of layers and table rows)."""
    if isinstance(value, int | np.integer):
        return str(int(value))
    value = float(value)
    return f"{value:.2f}" if round(value, 2) == value else f"{value:g}"


@dataclass(frozen=True)
class Setting:
    """One point of the grid: the swept values and the full parameters they give."""

    index: int
    values: tuple[tuple[str, float | int], ...]
    parameters: WatershedParameters

    @property
    def name(self) -> str:
        """e.g. 'bias=0.50' or 'bias=0.50 min_size=20'."""
        return " ".join(f"{key}={format_number(value)}" for key, value in self.values)

    def value(self, key: str):
        return dict(self.values).get(key)


def parameter_grid(
    base: WatershedParameters,
    bias: Sequence[float] | None = DEFAULT_BIASES,
    threshold: Sequence[float] | None = None,
    min_size: Sequence[int] | None = None,
) -> list[Setting]:
    """Every combination of the given values on top of ``base`` (None/empty: base's value).

    The bias is uniform: ``WatershedParameters.bias = value`` for every offset. Order: bias
    outermost, then threshold, then minimum size, each in the order given.
    """
    axes = [
        (key, list(dict.fromkeys(values)))
        for key, values in (("bias", bias), ("threshold", threshold), ("min_size", min_size))
        if values is not None and len(values) > 0
    ]
    if not axes:
        raise ValueError("nothing to sweep: give values for bias, threshold or min size")
    count = math.prod(len(values) for _, values in axes)
    if count > MAX_SETTINGS:
        raise ValueError(f"{count} settings: at most {MAX_SETTINGS} per sweep")
    settings = []
    for index, combination in enumerate(itertools.product(*(v for _, v in axes))):
        values = tuple(
            (key, int(value) if key == "min_size" else float(value))
            for (key, _), value in zip(axes, combination)
        )
        update = dict(values)
        try:
            parameters = WatershedParameters.model_validate(
                {**base.model_dump(), **update}
            )
        except Exception as error:  # pydantic ValidationError: say which value
            problem = error.errors()[0]["msg"] if hasattr(error, "errors") else str(error)
            shown = ", ".join(f"{k}={format_number(v)}" for k, v in values)
            raise ValueError(f"{shown}: {problem}") from None
        settings.append(Setting(index, values, parameters))
    return settings


# ---------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class Scores:
    """Agreement with the ground truth over its labelled voxels (lower is better)."""

    adapted_rand_error: float
    voi_split: float
    voi_merge: float


def count_segments(labels: np.ndarray) -> int:
    """Distinct non-zero ids."""
    ids = np.unique(np.asarray(labels))
    return int(np.count_nonzero(ids))


def _consecutive(labels: np.ndarray, keep_zero: bool) -> np.ndarray:
    """Ids 0..N (0 stays 0 when ``keep_zero``): small, dense contingency tables."""
    ids, inverse = np.unique(np.asarray(labels), return_inverse=True)
    inverse = inverse.reshape(labels.shape).astype(np.int64, copy=False)
    if keep_zero and ids.size and ids[0] != 0:
        inverse += 1
    return inverse


def score(segmentation: np.ndarray, ground_truth: np.ndarray) -> Scores | None:
    """Adapted Rand error, VOI split and VOI merge of ``segmentation`` against
    ``ground_truth``, counting only voxels where the ground truth is > 0.

    Both come from ``skimage.metrics``: ``adapted_rand_error(gt, seg)`` and
    ``variation_of_information(gt, seg)``, whose two values are H(seg | gt) (split: one
    true object cut into several segments) and H(gt | seg) (merge), with
    ``ignore_labels=(0,)``. None when the ground truth has no labelled voxel.
    """
    from skimage.metrics import adapted_rand_error, variation_of_information

    segmentation = np.asarray(segmentation)
    ground_truth = np.asarray(ground_truth)
    if segmentation.shape != ground_truth.shape:
        raise ValueError(
            f"the segmentation has shape {segmentation.shape}, the ground truth "
            f"{ground_truth.shape}"
        )
    if not np.any(ground_truth):
        return None
    truth = _consecutive(ground_truth, keep_zero=True)
    test = _consecutive(segmentation, keep_zero=False)
    error, _precision, _recall = adapted_rand_error(truth, test, ignore_labels=(0,))
    split, merge = variation_of_information(truth, test, ignore_labels=(0,))
    return Scores(float(error), float(split), float(merge))


# ---------------------------------------------------------------------------- results
@dataclass
class SweepResult:
    setting: Setting
    labels: np.ndarray | None = None
    n_segments: int = 0
    scores: Scores | None = None
    seconds: float = 0.0
    error: str | None = None

    @property
    def name(self) -> str:
        return self.setting.name

    @property
    def parameters(self) -> WatershedParameters:
        return self.setting.parameters

    @property
    def adapted_rand_error(self) -> float | None:
        return None if self.scores is None else self.scores.adapted_rand_error


def rank(results: Sequence[SweepResult]) -> list[SweepResult]:
    """Best first: scored results by adapted Rand error (ties: grid order), then unscored
    ones in grid order, then failed ones."""

    def key(result: SweepResult):
        if result.error is not None:
            return (2, 0.0, result.setting.index)
        if result.scores is None or math.isnan(result.scores.adapted_rand_error):
            return (1, 0.0, result.setting.index)
        return (0, result.scores.adapted_rand_error, result.setting.index)

    return sorted(results, key=key)


def best(results: Sequence[SweepResult]) -> SweepResult | None:
    """The scored result with the lowest adapted Rand error (first in grid order on ties)."""
    ranked = rank(results)
    if ranked and ranked[0].error is None and ranked[0].scores is not None and not math.isnan(
        ranked[0].scores.adapted_rand_error
    ):
        return ranked[0]
    return None


#: Columns of the table: (CSV header, title in the GUI and the printed table).
COLUMNS = [
    ("rank", "Rank"),
    ("setting", "Setting"),
    ("adapted_rand_error", "Adapted Rand error"),
    ("voi_split", "VOI split"),
    ("voi_merge", "VOI merge"),
    ("n_segments", "Segments"),
    ("seconds", "Seconds"),
]
CSV_COLUMNS = [c for c, _ in COLUMNS] + ["bias", "threshold", "min_size", "error",
                                        "parameters"]


def table_rows(results: Sequence[SweepResult]) -> list[dict]:
    """One dict per result, ranked, with the CSV columns (numbers as numbers, None if
    unknown)."""
    rows = []
    for position, result in enumerate(rank(results), start=1):
        scores = result.scores
        parameters = result.parameters
        rows.append({
            "rank": position,
            "setting": result.name,
            "adapted_rand_error": None if scores is None else scores.adapted_rand_error,
            "voi_split": None if scores is None else scores.voi_split,
            "voi_merge": None if scores is None else scores.voi_merge,
            "n_segments": None if result.error else result.n_segments,
            "seconds": round(result.seconds, 3),
            "bias": parameters.bias,
            "threshold": parameters.threshold,
            "min_size": parameters.min_size,
            "error": result.error or "",
            "parameters": parameters.model_dump_json(),
        })
    return rows


def write_csv(results: Sequence[SweepResult], path: str | Path) -> Path:
    """The ranked table as CSV, with each setting's full parameters as JSON."""
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in table_rows(results):
            writer.writerow({
                key: "" if value is None else (json.dumps(value) if isinstance(value, list)
                                               else value)
                for key, value in row.items()
            })
    return path


def format_cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key in ("adapted_rand_error", "voi_split", "voi_merge"):
        return f"{value:.4f}"
    if key == "seconds":
        return f"{value:.2f}"
    return str(value)


def format_table(results: Sequence[SweepResult]) -> str:
    """The ranked table as aligned text (the CLI prints it)."""
    rows = table_rows(results)
    header = [title for _, title in COLUMNS]
    body = [[format_cell(key, row[key]) for key, _ in COLUMNS] for row in rows]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *body)]
    lines = ["  ".join(h.ljust(w) if i == 1 else h.rjust(w)
                       for i, (h, w) in enumerate(zip(header, widths)))]
    for cells, row in zip(body, rows):
        line = "  ".join(c.ljust(w) if i == 1 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
        lines.append(line + (f"  error: {row['error']}" if row["error"] else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the worker
def _exit_with_parent() -> None:
    """Exit when the process that started this worker dies.

    ProcessPoolExecutor's workers hold both ends of their task queue, so they never see
    end-of-file when the parent crashes (a segfault in a GUI, a kill): without this they
    would wait forever.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # waits on the parent's sentinel
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _initialize_worker(nice: bool) -> None:
    _exit_with_parent()
    if nice:
        processes.lower_priority(None, NICENESS)
    # pay the imports and first-call costs now, not in the first setting
    from skimage.metrics import adapted_rand_error  # noqa: F401

    from .engine import segment

    rng = np.random.default_rng(0)
    segment(rng.random((3, 6, 6, 6), dtype=np.float32),
            WatershedParameters(offsets=[(1, 0, 0), (0, 1, 0), (0, 0, 1)]))


def _load(value):
    """An input of a task: an array, None, or the path of a .npy file (memory-mapped: a
    warm worker keeps nothing of a finished sweep)."""
    return np.load(value, mmap_mode="r") if isinstance(value, str) else value


def run_setting(task: dict) -> dict:
    """Segment one setting and score it (runs in a worker process, or inline).

    ``task`` holds the parameters as JSON and the inputs as arrays or paths of ``.npy``
    files; returns the shown labels, their segment count, the scores and the time taken.
    """
    from .engine import segment
    from .errors import MutexWatershedError

    started = time.perf_counter()
    try:
        inputs = {key: _load(task[key])
                  for key in ("affinities", "ground_truth", "mask", "seeds")}
        parameters = WatershedParameters.from_json(task["parameters"])
        labels = segment(inputs["affinities"], parameters, mask=inputs["mask"],
                         seeds=inputs["seeds"])
        shown = task.get("shown")
        if shown is not None:
            labels = labels[tuple(shown)]
        labels = np.ascontiguousarray(labels)
        seconds = time.perf_counter() - started
        scores = None if inputs["ground_truth"] is None else score(labels,
                                                                   inputs["ground_truth"])
        return {"labels": labels if task.get("keep_labels", True) else None,
                "n_segments": count_segments(labels), "scores": scores,
                "seconds": seconds, "error": None}
    except MutexWatershedError as error:
        message = str(error)
    except Exception as error:
        message = "".join(traceback.format_exception_only(type(error), error)).strip()
    return {"labels": None, "n_segments": 0, "scores": None,
            "seconds": time.perf_counter() - started, "error": message}


# ---------------------------------------------------------------------------- running
ArrayOrReader = np.ndarray | Callable[[], np.ndarray] | None


@dataclass
class SweepInputs:
    """The crop to sweep on. Each array may be a callable that reads it (called on a
    background thread, so lazy dask/zarr reads do not block a UI).

    ``affinities`` is (C, *spatial); ``mask``/``seeds`` have the spatial shape of the crop;
    ``shown`` (slices of the crop) selects the part whose labels are returned and scored,
    and ``ground_truth`` has the shape of that part (the whole crop without ``shown``).
    """

    affinities: ArrayOrReader
    ground_truth: ArrayOrReader = None
    mask: ArrayOrReader = None
    seeds: ArrayOrReader = None
    shown: tuple[slice, ...] | None = None


class SweepJob:
    """One running sweep: settings handed to the workers, results collected as they end.

    ``poll()`` returns the results that arrived since the last call (thread-safe, never
    blocks); ``done`` is True once every setting has a result or the job was cancelled or
    failed (``error``).
    """

    def __init__(self, sweeper: Sweeper, inputs: SweepInputs, settings: Sequence[Setting],
                 keep_labels: bool = True) -> None:
        self.settings = list(settings)
        self.results: list[SweepResult] = []
        self.error: str | None = None
        self.cancelled = False
        self.started = time.perf_counter()
        self.finished: float | None = None
        self._sweeper = sweeper
        self._inputs = inputs
        self._keep_labels = keep_labels
        self._arrivals: queue.Queue[SweepResult] = queue.Queue()
        self._futures: list[futures.Future] = []
        self._lock = threading.Lock()
        self._remaining = len(self.settings)
        self._directory: str | None = None
        self._thread = threading.Thread(target=self._submit_all, daemon=True,
                                        name="mutex-watershed-sweep")
        self._thread.start()

    # ------------------------------------------------------------------ public API
    @property
    def done(self) -> bool:
        return self.finished is not None

    def poll(self) -> list[SweepResult]:
        out = []
        while True:
            try:
                result = self._arrivals.get_nowait()
            except queue.Empty:
                break
            self.results.append(result)
            out.append(result)
        with self._lock:
            finished = self._remaining == 0 or self.error is not None or self.cancelled
            if finished and self.finished is None and self._arrivals.empty():
                self.finished = time.perf_counter()
                self._cleanup()
        return out

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> list[SweepResult]:
        """Block until done (scripts, the CLI); returns every result in arrival order."""
        until = None if timeout is None else time.perf_counter() + timeout
        while not self.done:
            self.poll()
            if until is not None and time.perf_counter() > until:
                raise TimeoutError("the sweep did not finish in time")
            time.sleep(interval)
        return self.results

    def cancel(self) -> None:
        """Stop: settings not started are dropped, running ones killed (with the workers,
        which the sweeper starts afresh for the next sweep)."""
        with self._lock:
            if self.finished is not None or self.cancelled:
                return
            self.cancelled = True
            pending = list(self._futures)
        running = False
        for future in pending:
            if not future.cancel() and not future.done():
                running = True
        if running:
            self._sweeper.kill_workers()

    # ------------------------------------------------------------------ internals
    def _submit_all(self) -> None:
        try:
            task_inputs = self._prepare()
            for setting in self.settings:
                with self._lock:
                    if self.cancelled:
                        break
                task = {**task_inputs, "parameters": setting.parameters.to_json(),
                        "keep_labels": self._keep_labels}
                future = self._sweeper.submit(task)
                with self._lock:
                    self._futures.append(future)
                future.add_done_callback(
                    lambda f, setting=setting: self._arrived(setting, f)
                )
        except Exception as error:
            detail = "".join(traceback.format_exception_only(type(error), error)).strip()
            with self._lock:
                self.error = f"cannot start the sweep: {detail}"
        with self._lock:
            if self.cancelled or self.error is not None:
                self._cleanup()  # poll() may have finished the job before the files existed

    def _prepare(self) -> dict:
        """Read the inputs; for worker processes, save them once as .npy files."""
        arrays = {}
        for key in ("affinities", "ground_truth", "mask", "seeds"):
            value = getattr(self._inputs, key)
            value = value() if callable(value) else value
            arrays[key] = None if value is None else np.ascontiguousarray(np.asarray(value))
        shown = self._inputs.shown
        expected = arrays["affinities"].shape[1:]
        if shown is not None:
            expected = tuple(len(range(*s.indices(n))) for s, n in zip(shown, expected))
        if arrays["ground_truth"] is not None and arrays["ground_truth"].shape != expected:
            raise ValueError(f"the ground truth crop has shape {arrays['ground_truth'].shape}, "
                             f"the segmented part {expected}")
        task = {"shown": shown}
        if not self._sweeper.in_process:
            self._directory = tempfile.mkdtemp(prefix="mutex-watershed-sweep-")
        for key, array in arrays.items():
            if array is None or self._directory is None:
                task[key] = array
            else:
                path = os.path.join(self._directory, f"{key}.npy")
                np.save(path, array)
                task[key] = path
        return task

    def _arrived(self, setting: Setting, future: futures.Future) -> None:
        if future.cancelled():
            outcome = None
        else:
            try:
                outcome = future.result()
            except Exception as error:  # BrokenProcessPool: a worker died (memory?)
                killed = self.cancelled
                outcome = {"labels": None, "n_segments": 0, "scores": None, "seconds": 0.0,
                           "error": "cancelled" if killed else
                           f"the worker process stopped unexpectedly ({type(error).__name__})"}
                if not killed:
                    self._sweeper.kill_workers()
        if outcome is not None and not (self.cancelled and outcome["error"] == "cancelled"):
            self._arrivals.put(SweepResult(setting=setting, **outcome))
        with self._lock:
            self._remaining -= 1

    def _cleanup(self) -> None:
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


class _InlineExecutor:
    """workers=0: run each setting in this process (debugging; blocks the caller)."""

    def submit(self, function, *args):
        future: futures.Future = futures.Future()
        try:
            future.set_result(function(*args))
        except BaseException as error:  # pragma: no cover - run_setting catches
            future.set_exception(error)
        return future

    def shutdown(self, *args, **kwargs):
        pass


class Sweeper:
    """Owns the worker processes (spawned on first use, kept warm between sweeps).

    ``workers`` processes run settings in parallel; 0 runs them in the calling process.
    ``nice`` lowers the workers' priority so a UI in the caller keeps the CPU.
    """

    def __init__(self, workers: int = 2, nice: bool = True) -> None:
        if workers < 0:
            raise ValueError("workers must be >= 0")
        self.workers = int(workers)
        self.nice = nice
        self._executor = None
        self._lock = threading.Lock()

    @property
    def in_process(self) -> bool:
        return self.workers == 0

    def start(self, inputs: SweepInputs, settings: Sequence[Setting],
              keep_labels: bool = True) -> SweepJob:
        return SweepJob(self, inputs, settings, keep_labels=keep_labels)

    def submit(self, task: dict) -> futures.Future:
        with self._lock:
            if self._executor is None:
                if self.in_process:
                    self._executor = _InlineExecutor()
                else:
                    self._executor = futures.ProcessPoolExecutor(
                        max_workers=self.workers,
                        mp_context=multiprocessing.get_context("spawn"),
                        initializer=_initialize_worker,
                        initargs=(self.nice,),
                    )
            executor = self._executor
        return executor.submit(run_setting, task)

    def worker_pids(self) -> list[int]:
        """Process ids of the running workers (diagnostics, tests)."""
        executor = self._executor
        table = getattr(executor, "_processes", None) or {}
        return [p.pid for p in list(table.values()) if p.is_alive()]

    def kill_workers(self) -> None:
        """Kill the worker processes now (running settings are lost); the next ``submit``
        starts new ones."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is None or isinstance(executor, _InlineExecutor):
            return
        # ProcessPoolExecutor cannot stop a running task: kill its processes (the process
        # table is the only handle before Python 3.14's kill_workers())
        workers = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        processes.kill([process for worker in workers if worker.pid
                        for process in processes.tree(worker.pid)])
        for worker in workers:  # reaped here: the executor no longer waits for them
            try:
                worker.join(timeout=5)
            except Exception:
                pass

    def close(self) -> None:
        """Stop the workers (idle ones exit, busy ones are killed)."""
        self.kill_workers()

    def __enter__(self) -> Sweeper:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_sweep(
    affinities,
    settings: Sequence[Setting],
    ground_truth=None,
    *,
    shown: tuple[slice, ...] | None = None,
    mask=None,
    seeds=None,
    workers: int = 2,
    keep_labels: bool = True,
    timeout: float | None = None,
) -> list[SweepResult]:
    """Run every setting on the crop ``affinities`` and return the results ranked."""
    inputs = SweepInputs(affinities, ground_truth, mask, seeds, shown)
    with Sweeper(workers=min(workers, len(settings)) if workers else 0, nice=False) as sweeper:
        job = sweeper.start(inputs, settings, keep_labels=keep_labels)
        results = job.wait(timeout=timeout)
    if job.error:
        from .errors import MutexWatershedError

        raise MutexWatershedError(job.error)
    return rank(results)

