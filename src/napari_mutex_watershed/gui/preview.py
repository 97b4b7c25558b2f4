"""The live preview's compute side: a warm worker process and a dispatcher thread.

mwatershed holds the GIL for its whole run, so a thread cannot keep the napari UI responsive;
the segmentation therefore runs in a separate process, started once and reused. It is
started by module name (``python -m napari_mutex_watershed.gui.preview_worker``) and talks
over its stdin and stdout, so the user's script is never re-run (as multiprocessing's spawn
would): a script that opens napari without an ``if __name__ == "__main__":`` guard works.
No Qt import here: the widget polls ``PreviewService.results()`` from a QTimer on the main
thread and is the only one touching layers.

- ``PreviewService.submit(request)`` replaces any request not yet started: the newest wins.
- A dispatcher thread reads the crop (numpy, dask or zarr: I/O stays off the main thread),
  sends it to the worker, and waits. The worker keeps the last crop, so a parameter change
  on the same view sends only the parameters.
- A request that is overtaken while computing is abandoned: if a warm spare process is ready
  the busy one is killed and the spare takes over, otherwise its result is discarded.
- A worker that crashes, or runs longer than ``timeout`` seconds, is replaced without user
  action; the request gets an error result saying so.
- A worker that cannot start (its interpreter or an import fails) is reported at once as the
  pending request's error, with the last line it printed; the next request tries again.
"""

from __future__ import annotations

import collections
import queue
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..freed_memory import worker_environment
from ..processes import start_module
from .preview_worker import read_frame, write_frame

#: A worker that does not answer within this many seconds is killed and replaced.
DEFAULT_TIMEOUT = 300.0
#: How long a fresh worker may take to import numpy, scipy and mwatershed.
STARTUP_TIMEOUT = 60.0
#: The module the worker processes run (tests point it at a broken one).
WORKER_MODULE = "napari_mutex_watershed.gui.preview_worker"
#: The worker runs this much "nicer" than napari, so the UI (and the X server) win the CPU
#: when cores are scarce.
NICENESS = 5


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
    """``stages``: the worker's seconds per step of segment() (weights, kernel, finalize);
    ``meta`` gains the perf_counter times the request was ``sent`` to the worker and its
    answer ``answered``, for the latency breakdown of benchmarks/bench_preview.py."""

    id: int
    labels: np.ndarray | None
    error: str | None = None
    compute_seconds: float = 0.0
    total_seconds: float = 0.0
    meta: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)


def placed_error(info: dict, meta: dict) -> str:
    """A worker's error message; a bad value's voxel (which the worker counts from its crop)
    as the index in the whole layer and, given ``meta["scale"]``/``["translate"]`` (the
    layer's spatial map, ``visible_region.world_map``), its world position."""
    invalid, region = info.get("invalid"), meta.get("region")
    if invalid is None or region is None:
        return info["error"]
    return str(invalid.at(region.start, meta.get("scale"), meta.get("translate")))


_EOF = ("eof", None)


class WorkerProcess:
    """One worker process, the parent's ends of its pipes and two threads reading them.

    Reading stdout on a thread turns the pipe into a queue, which can be polled with a
    timeout on every platform; reading stderr keeps its pipe from filling up, passes the
    lines on to napari's stderr and keeps the last ones to say why a worker died.
    """

    def __init__(self, module: str = WORKER_MODULE) -> None:
        self.started = time.monotonic()
        self.ready = False
        self.startup_seconds: float | None = None
        self.crop_key = None
        self.busy_with: PreviewRequest | None = None
        self.busy_since = 0.0
        self.start_error: str | None = None
        self._messages: queue.Queue = queue.Queue()
        self._held = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._stderr_done = threading.Event()
        try:
            self.process = start_module(
                module, niceness=NICENESS, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=worker_environment(),
            )
        except OSError as error:  # no interpreter at sys.executable, no fork: say so
            self.process = None
            self.start_error = f"the preview process could not start: {error}"
            self._stderr_done.set()
            return
        threading.Thread(target=self._read_answers, daemon=True,
                         name="mutex-watershed-preview-reader").start()
        threading.Thread(target=self._read_stderr, daemon=True,
                         name="mutex-watershed-preview-stderr").start()

    # --------------------------------------------------------------- reader threads
    def _read_answers(self) -> None:
        stream = self.process.stdout
        try:
            while True:
                self._messages.put(read_frame(stream))
        except (EOFError, OSError, ValueError):
            pass
        except Exception:  # a frame that does not unpickle: treat the worker as gone
            traceback.print_exc()
        finally:
            self._messages.put(_EOF)
            stream.close()

    def _read_stderr(self) -> None:
        stream = self.process.stderr
        try:
            for raw in stream:
                line = raw.decode(errors="replace")
                self._stderr_tail.append(line.rstrip())
                try:
                    sys.stderr.write(line)
                except Exception:  # no stderr (pythonw): keep only the tail
                    pass
        except (OSError, ValueError):
            pass
        finally:
            stream.close()
            self._stderr_done.set()

    # --------------------------------------------------------------- state
    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_code(self, timeout: float = 1.0) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def _peek(self, timeout: float = 0.0):
        """The next message without taking it (``None``: nothing within ``timeout``)."""
        if self._held is None:
            try:
                self._held = self._messages.get(timeout=timeout) if timeout > 0 else \
                    self._messages.get_nowait()
            except queue.Empty:
                return None
        return self._held

    def poll(self, timeout: float = 0.0) -> bool:
        """True when a message (or the end of the pipe) is waiting."""
        return self._peek(timeout) is not None

    def check_ready(self) -> bool:
        """True once the worker has imported everything and said so."""
        if not self.ready:
            message = self._peek()
            if message is not None and message[0] == "ready":
                self._held = None
                self.ready = True
                self.startup_seconds = time.monotonic() - self.started
        return self.ready

    def failed_to_start(self) -> bool:
        """It will never be ready: could not be started, or ended before saying so."""
        if self.ready:
            return False
        return self.process is None or self._peek() is _EOF or not self.alive()

    def why_not_started(self) -> str:
        """The reason a worker did not start, with the last line it printed (usually the
        exception)."""
        if self.start_error is not None:
            return self.start_error
        code = self.exit_code(timeout=2.0)
        self._stderr_done.wait(timeout=2.0)
        lines = [line for line in self._stderr_tail if line.strip()]
        detail = next((line for line in reversed(lines) if not line[:1].isspace()), "")
        detail = detail or (lines[-1].strip() if lines else "")
        text = "the preview process could not start"
        text += f" (exit code {code})" if code is not None else ""
        return text + (f": {detail}" if detail else "")

    # --------------------------------------------------------------- requests
    def send(self, request: PreviewRequest, crop: np.ndarray | None) -> None:
        write_frame(self.process.stdin, {
            "id": request.id,
            "crop": crop,
            "crop_key": request.crop_key,
            "parameters": request.parameters_json,
            "shown": request.shown,
            "mask": request.mask,
            "seeds": request.seeds,
        })
        if crop is not None:
            self.crop_key = request.crop_key
        self.busy_with = request
        self.busy_since = time.monotonic()

    def receive(self) -> tuple[str, dict, np.ndarray | None]:
        message = self._peek(timeout=5.0)
        self._held = None
        if message is None or message is _EOF:
            raise EOFError("the preview process closed its pipe")
        kind, info = message
        self.busy_with = None
        return kind, info, info.pop("labels", None)

    def kill(self) -> None:
        """Kill the process; its reader threads then see the pipes end and stop."""
        if self.process is None:
            return
        try:
            self.process.kill()
            self.process.wait(timeout=5)
        except Exception:
            pass
        try:
            self.process.stdin.close()
        except Exception:
            pass


class PreviewService:
    """Owns the worker processes and the dispatcher thread; ``submit`` is thread-safe.

    Only the dispatcher thread touches the workers; the lock guards the pending request.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, spare: bool = True,
                 module: str | None = None) -> None:
        self.timeout = timeout
        self.use_spare = spare
        self.module = module or WORKER_MODULE
        #: Why the last worker could not start; no new one is started until a new request.
        self.start_failure: str | None = None
        self._retry_for = -1  # the newest request id a start has been tried for
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

    def startup_seconds(self) -> float | None:
        """How long the active worker took from its start to ready (interpreter, imports,
        warm-up), as napari saw it."""
        active = self._active
        return active.startup_seconds if active is not None else None

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
        self._check_started()  # one that died starting is reported, not silently replaced
        if self.start_failure is not None:
            with self._lock:
                newer = self._pending is not None and self._pending.id > self._retry_for
            if not newer:
                return  # a worker could not start: try again only for a new request
            self.start_failure = None
        # only a worker that had started is replaced here; one that dies starting is left
        # for _check_started, which reports it instead of starting another in a loop
        if self._active is None or _crashed(self._active):
            if self._active is not None:
                self._active.kill()
            if self._spare is not None and self._spare.alive():
                self._active, self._spare = self._spare, None
            else:
                self._active = WorkerProcess(self.module)
        if self.use_spare and (self._spare is None or _crashed(self._spare)):
            if self._spare is not None:
                self._spare.kill()
            self._spare = WorkerProcess(self.module)

    def _check_started(self) -> None:
        """A worker that could not start (or not within ``STARTUP_TIMEOUT``) makes the
        pending request fail with the reason, instead of waiting for it forever."""
        for worker in (self._active, self._spare):
            if worker is None or worker.check_ready():
                continue
            if worker.failed_to_start():
                reason = worker.why_not_started()
            elif time.monotonic() - worker.started > STARTUP_TIMEOUT:
                reason = (f"the preview process did not start within {STARTUP_TIMEOUT:g} s "
                          "(see the terminal for its output)")
            else:
                continue
            for other in (self._active, self._spare):
                if other is not None and not other.ready:
                    other.kill()
            if self._active is not None and not self._active.ready:
                self._active = None
            if self._spare is not None and not self._spare.ready:
                self._spare = None
            self.start_failure = reason
            with self._lock:
                self._retry_for = self._latest_id
                request = None
                if self._active is None:  # nobody left to serve it
                    request, self._pending = self._pending, None
            if request is not None:
                self._put(PreviewResult(request.id, None, reason, meta=request.meta))
            return

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
            except Exception:
                traceback.print_exc()
                time.sleep(0.5)
            with self._lock:
                if self._closed:
                    return
                idle = self._pending is None and (
                    self._active is None or self._active.busy_with is None
                )
                if idle or self._active is None:
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
            active.poll(0.02)  # _check_started handles one that never gets ready
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
        request.meta["sent"] = time.perf_counter()  # (the worker may start before send returns)
        try:
            active.send(request, crop)
        except (OSError, EOFError):
            self._report_crash(active, request)

    def _wait_for(self, active: WorkerProcess) -> None:
        request = active.busy_with
        if active.poll(0.02):
            try:
                kind, info, labels = active.receive()
            except (EOFError, OSError):
                self._report_crash(active, request)
                return
            request.meta["answered"] = time.perf_counter()
            elapsed = request.meta["answered"] - request.meta["submitted"]
            if kind == "labels":
                self._put(PreviewResult(info["id"], labels, None, info["seconds"], elapsed,
                                        request.meta, info["stages"]))
            else:
                self._put(PreviewResult(info["id"], None, placed_error(info, request.meta),
                                        0.0, elapsed, request.meta))
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
        code = active.exit_code(timeout=1.0)
        if request is not None:
            self._put(PreviewResult(
                request.id, None,
                f"the preview process stopped unexpectedly (exit code {code}); it was "
                "restarted",
                meta=request.meta,
            ))
        self._replace_active()


def _crashed(worker: WorkerProcess) -> bool:
    """It had started (said ready) and is gone."""
    return worker.ready and not worker.alive()
