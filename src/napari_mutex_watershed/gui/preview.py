"""The live preview's compute side: a warm worker process and a dispatcher thread.

mwatershed holds the GIL for its whole run, so a thread cannot keep the napari UI responsive;
the segmentation therefore runs in a separate process (multiprocessing, 'spawn' context),
started once and reused. No Qt import here: the widget polls ``PreviewService.results()`` from
a QTimer on the main thread and is the only one touching layers.

- ``PreviewService.submit(request)`` replaces any request not yet started: the newest wins.
- A dispatcher thread reads the crop (numpy, dask or zarr: I/O stays off the main thread),
  sends it to the worker, and waits. The worker keeps the last crop, so a parameter change
  on the same view sends only the parameters.
- A request that is overtaken while computing is abandoned: if a warm spare process is ready
  the busy one is killed and the spare takes over, otherwise its result is discarded.
- A worker that crashes, or runs longer than ``timeout`` seconds, is replaced without user
  action; the request gets an error result saying so.

Scripts that open napari and use the preview need the usual multiprocessing guard
(``if __name__ == "__main__":``), because 'spawn' re-imports the main module.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import numpy as np

#: A worker that does not answer within this many seconds is killed and replaced.
DEFAULT_TIMEOUT = 300.0
#: How long a fresh worker may take to import numpy, scipy and mwatershed.
STARTUP_TIMEOUT = 60.0


@dataclass
class PreviewRequest:
    """One preview computation.

    ``affinities`` is a callable returning the crop (C, *spatial) as a numpy array; it runs
    on the dispatcher thread, so lazy (dask, zarr) reads do not block the UI. ``crop_key``
    identifies the crop's content: when the worker already holds a crop with that key, it
    is not read or sent again.
    """

    id: int
    crop_key: tuple
    affinities: Callable[[], np.ndarray]
    parameters_json: str
    shown: tuple[slice, ...]
    mask: np.ndarray | None = None
    seeds: np.ndarray | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class PreviewResult:
    id: int
    labels: np.ndarray | None
    error: str | None = None
    compute_seconds: float = 0.0
    total_seconds: float = 0.0
    meta: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- the worker


def _send_array(conn: Connection, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    conn.send((array.shape, array.dtype.str))
    conn.send_bytes(memoryview(array).cast("B"))


def _recv_array(conn: Connection) -> np.ndarray:
    shape, dtype = conn.recv()
    buffer = conn.recv_bytes()
    return np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape)


def _warm_up(segment, parameters_class) -> None:
    """One tiny run, so the first real preview does not pay for first-call costs."""
    rng = np.random.default_rng(0)
    for ndim in (2, 3):
        parameters = parameters_class(offsets=[tuple(int(i == j) for j in range(ndim))
                                               for i in range(ndim)])
        segment(rng.random((ndim,) + (8,) * ndim, dtype=np.float32), parameters)


#: The worker runs this much "nicer" than napari, so the UI (and the X server) win the CPU
#: when cores are scarce.
NICENESS = 5


def _lower_priority() -> None:
    try:
        os.nice(NICENESS)
    except (AttributeError, OSError):  # Windows has no nice(); not permitted: run as is
        pass


def serve(conn: Connection) -> None:
    """Worker process main loop: segment crops until the pipe closes."""
    _lower_priority()
    from ..engine import segment
    from ..errors import MutexWatershedError
    from ..parameters import WatershedParameters

    _warm_up(segment, WatershedParameters)
    conn.send(("ready", None))
    crop_key, crop = None, None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        if message["has_crop"]:
            crop = None  # free the old crop before receiving the new one
            crop = _recv_array(conn)
            crop_key = message["crop_key"]
        started = time.perf_counter()
        try:
            if crop is None or crop_key != message["crop_key"]:
                raise RuntimeError("the preview worker lost its crop")
            parameters = WatershedParameters.from_json(message["parameters"])
            labels = segment(crop, parameters, mask=message["mask"], seeds=message["seeds"])
            labels = np.ascontiguousarray(labels[message["shown"]])
        except MutexWatershedError as error:
            conn.send(("error", {"id": message["id"], "error": str(error)}))
            continue
        except Exception as error:  # report, keep serving
            detail = "".join(traceback.format_exception_only(type(error), error)).strip()
            conn.send(("error", {"id": message["id"], "error": detail}))
            continue
        conn.send(("labels", {"id": message["id"], "seconds": time.perf_counter() - started}))
        _send_array(conn, labels)


class WorkerProcess:
    """One spawned worker process and the parent's end of its pipe."""

    def __init__(self, context) -> None:
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(
            target=serve, args=(child,), daemon=True, name="mutex-watershed-preview"
        )
        self.process.start()
        child.close()
        self.started = time.monotonic()
        self.ready = False
        self.crop_key = None
        self.busy_with: PreviewRequest | None = None
        self.busy_since = 0.0

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    def check_ready(self) -> bool:
        """True once the worker has imported everything and said so."""
        if not self.ready:
            try:
                if self.conn.poll(0):
                    kind, _ = self.conn.recv()
                    self.ready = kind == "ready"
            except (EOFError, OSError):
                return False
        return self.ready

    def send(self, request: PreviewRequest, crop: np.ndarray | None) -> None:
        self.conn.send(
            {
                "id": request.id,
                "has_crop": crop is not None,
                "crop_key": request.crop_key,
                "parameters": request.parameters_json,
                "shown": request.shown,
                "mask": request.mask,
                "seeds": request.seeds,
            }
        )
        if crop is not None:
            _send_array(self.conn, crop)
            self.crop_key = request.crop_key
        self.busy_with = request
        self.busy_since = time.monotonic()

    def receive(self) -> tuple[str, dict, np.ndarray | None]:
        kind, info = self.conn.recv()
        labels = _recv_array(self.conn) if kind == "labels" else None
        self.busy_with = None
        return kind, info, labels

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.join(timeout=5)
        except Exception:
            pass
        try:
            self.conn.close()
        except Exception:
            pass


class PreviewService:
    """Owns the worker processes and the dispatcher thread; ``submit`` is thread-safe.

    Only the dispatcher thread touches the workers; the lock guards the pending request.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, spare: bool = True) -> None:
        self.timeout = timeout
        self.use_spare = spare
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Condition()
        self._pending: PreviewRequest | None = None
        self._latest_id = -1
        self._results: queue.Queue[PreviewResult] = queue.Queue()
        self._closed = False
        self._active: WorkerProcess | None = None
        self._spare: WorkerProcess | None = None
        self.restarts = 0
        self._thread = threading.Thread(
            target=self._run, name="mutex-watershed-preview-dispatcher", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ public API
    def submit(self, request: PreviewRequest) -> None:
        request.meta.setdefault("submitted", time.perf_counter())
        with self._lock:
            if self._closed:
                return
            self._pending = request
            self._latest_id = max(self._latest_id, request.id)
            self._lock.notify_all()

    def cancel(self, up_to_id: int) -> None:
        """Forget requests with ids up to ``up_to_id`` (e.g. when the preview is turned off)."""
        with self._lock:
            self._latest_id = max(self._latest_id, up_to_id)
            if self._pending is not None and self._pending.id <= up_to_id:
                self._pending = None

    def results(self) -> list[PreviewResult]:
        """Results that arrived since the last call (filter them by id)."""
        out = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                return out

    def worker_pids(self) -> dict[str, int | None]:
        """Process ids of the active and the spare worker (for diagnostics and tests)."""
        active, spare = self._active, self._spare
        return {
            "active": active.pid if active is not None else None,
            "spare": spare.pid if spare is not None else None,
        }

    def workers_ready(self) -> bool:
        """True once the active worker (and the spare, if used) finished starting up."""
        active, spare = self._active, self._spare
        return (active is not None and active.ready
                and (not self.use_spare or (spare is not None and spare.ready)))

    def busy_pid(self) -> int | None:
        """Process id of the worker computing a preview right now, if any."""
        active = self._active
        return active.pid if active is not None and active.busy_with is not None else None

    def is_idle(self) -> bool:
        active = self._active
        with self._lock:
            pending = self._pending is not None
        return not pending and (active is None or active.busy_with is None)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the dispatcher and kill the workers."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._pending = None
            self._lock.notify_all()
        self._thread.join(timeout=10)
        for worker in (self._active, self._spare):
            if worker is not None:
                worker.kill()
        self._active = self._spare = None

    # ------------------------------------------------------------------ dispatcher
    def _ensure_workers(self) -> None:
        if self._active is None or not self._active.alive():
            if self._active is not None:
                self._active.kill()
            if self._spare is not None and self._spare.alive():
                self._active, self._spare = self._spare, None
            else:
                self._active = WorkerProcess(self._context)
        if self.use_spare and (self._spare is None or not self._spare.alive()):
            if self._spare is not None:
                self._spare.kill()
            self._spare = WorkerProcess(self._context)

    def _replace_active(self) -> None:
        """Kill the active worker; the spare (or a fresh one) takes over."""
        self.restarts += 1
        old, self._active = self._active, None
        if old is not None:
            old.kill()
        self._ensure_workers()

    def _run(self) -> None:
        while True:
            try:
                self._ensure_workers()  # warm workers before the first request
                for worker in (self._active, self._spare):
                    if worker is not None and worker.busy_with is None:
                        worker.check_ready()
            except Exception:
                traceback.print_exc()
                time.sleep(0.5)
            with self._lock:
                if self._closed:
                    return
                idle = self._pending is None and (
                    self._active is None or self._active.busy_with is None
                )
                if idle:
                    self._lock.wait(timeout=0.5)
                    continue
            try:
                self._step(self._active)
            except Exception:  # never let the dispatcher die
                traceback.print_exc()
                time.sleep(0.1)

    def _is_stale(self, request_id: int) -> bool:
        with self._lock:
            return request_id < self._latest_id

    def _put(self, result: PreviewResult) -> None:
        if not self._is_stale(result.id):
            self._results.put(result)

    def _step(self, active: WorkerProcess) -> None:
        if active.busy_with is not None:
            self._wait_for(active)
            return
        if not active.check_ready():
            if not active.alive() or time.monotonic() - active.started > STARTUP_TIMEOUT:
                self._replace_active()
            else:
                try:
                    active.conn.poll(0.02)
                except (OSError, EOFError):
                    pass
            return
        with self._lock:
            request, self._pending = self._pending, None
        if request is None or self._is_stale(request.id):
            return
        try:
            crop = None if active.crop_key == request.crop_key else request.affinities()
            crop = None if crop is None else np.ascontiguousarray(crop)
        except Exception as error:
            self._put(PreviewResult(request.id, None, f"cannot read the crop: {error}",
                                    meta=request.meta))
            return
        if self._is_stale(request.id):  # overtaken while reading
            return
        try:
            active.send(request, crop)
        except (OSError, EOFError):
            self._report_crash(active, request)

    def _wait_for(self, active: WorkerProcess) -> None:
        request = active.busy_with
        try:
            has_answer = active.conn.poll(0.02)
        except (OSError, EOFError):
            has_answer = False
        if has_answer:
            try:
                kind, info, labels = active.receive()
            except (EOFError, OSError):
                self._report_crash(active, request)
                return
            elapsed = time.perf_counter() - request.meta.get("submitted", time.perf_counter())
            if kind == "labels":
                self._put(PreviewResult(info["id"], labels, None, info["seconds"], elapsed,
                                        request.meta))
            else:
                self._put(PreviewResult(info["id"], None, info["error"], 0.0, elapsed,
                                        request.meta))
            return
        if not active.alive():
            self._report_crash(active, request)
            return
        if time.monotonic() - active.busy_since > self.timeout:
            self._put(PreviewResult(
                request.id, None,
                f"the preview took longer than {self.timeout:g} s and was stopped; its "
                "process was restarted (try a smaller view)",
                meta=request.meta,
            ))
            self._replace_active()
            return
        if self._is_stale(request.id):
            spare = self._spare
            if spare is not None and spare.check_ready():
                self._replace_active()  # abandon the overtaken computation

    def _report_crash(self, active: WorkerProcess, request: PreviewRequest | None) -> None:
        active.process.join(timeout=1)
        code = active.process.exitcode
        if request is not None:
            self._put(PreviewResult(
                request.id, None,
                f"the preview process stopped unexpectedly (exit code {code}); it was "
                "restarted",
                meta=request.meta,
            ))
        self._replace_active()
