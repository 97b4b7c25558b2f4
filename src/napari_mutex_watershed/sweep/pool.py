"""Running the settings in worker processes, up to a worker count, kept warm between sweeps.

mwatershed holds the GIL, so threads would freeze a UI; the workers are a process pool
('spawn' context, safe to start from a Qt process). ``Sweeper.start`` returns a ``SweepJob`` to
poll (the GUI), ``run_sweep`` waits for it (the CLI, scripts)."""

from __future__ import annotations

import concurrent.futures as futures
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

import numpy as np

from .. import processes
from ..parameters import WatershedParameters
from .grid import Setting
from .scoring import SweepResult, count_segments, rank, score

#: Worker processes run this much "nicer" than the caller, so a UI keeps the CPU (a sweep
#: is batch work: nicer than the live preview's worker, which runs at 5).
NICENESS = 10


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

    from ..engine import segment

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
    from ..engine import segment
    from ..errors import InvalidValuesError, MutexWatershedError

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
    except InvalidValuesError as error:  # the voxel in the whole layer, not the crop
        origin = task.get("origin")
        message = str(error if origin is None else error.at(origin, task.get("scale"),
                                                              task.get("translate")))
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
    ``origin`` (the crop's start in the whole layer) and ``scale``/``translate`` (the
    layer's: a scale per axis or its whole linear map, ``errors.world_position``) place a
    bad value's voxel in a message (``InvalidValuesError.at``).
    """

    affinities: ArrayOrReader
    ground_truth: ArrayOrReader = None
    mask: ArrayOrReader = None
    seeds: ArrayOrReader = None
    shown: tuple[slice, ...] | None = None
    origin: tuple[int, ...] | None = None
    scale: tuple | None = None
    translate: tuple[float, ...] | None = None


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
        task = {"shown": shown, "origin": self._inputs.origin, "scale": self._inputs.scale,
                "translate": self._inputs.translate}
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
            with processes.main_script_hidden():  # the pool starts its workers here
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
        """Stop the workers: idle ones are asked to exit and waited for (killed, they would
        leave the pool's semaphores to Python's resource tracker, which warns about them at
        exit), busy ones are killed."""
        with self._lock:
            executor = self._executor
            idle = (isinstance(executor, futures.ProcessPoolExecutor)
                    and not getattr(executor, "_pending_work_items", None))
            if idle:
                self._executor = None
        if idle:
            executor.shutdown(wait=True)
            return
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
        from ..errors import MutexWatershedError

        raise MutexWatershedError(job.error)
    return rank(results)


