"""Child processes, in one place: start one by module name, lower its priority, stop its tree.

Every long computation runs in another process (mwatershed holds the GIL): the blockwise job
the CLI supervises, the widget's full run, the sweep's pool and the preview's workers. They
share these few functions, so starting, niceness and cancel work one way everywhere. Only the
standard library at import: the CLI imports this before anything heavy, and psutil (20 to 30
ms to import) is imported by the functions that look at other processes, which a one-block
command never calls.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

#: SIGKILL where it exists (Windows has none: terminate is a kill there).
KILL_SIGNAL = getattr(signal, "SIGKILL", signal.SIGTERM)
#: Seconds between SIGTERM and SIGKILL when a tree is stopped.
STOP_GRACE = 0.5
#: At most this many rounds of ``stop_descendants`` (each stops those started meanwhile).
STOP_ROUNDS = 10


def own_group() -> dict:
    """Popen arguments that put a child into a process group of its own.

    ``process_group=0`` (setpgid) rather than ``start_new_session=True`` (setsid): both make
    a group that ``os.killpg`` reaches as a whole, but with Linux's autogroup scheduling a new
    session is also a new scheduling group, competing with napari's as an equal whatever its
    nice value. (Windows has neither; the tree is then stopped through psutil.)
    """
    return {"process_group": 0} if os.name == "posix" else {}


def start_module(module: str, args=(), *, niceness: int = 0, group: bool = False,
                 env: dict | None = None, **popen) -> subprocess.Popen:
    """``python -m module args...`` as a child, at ``niceness`` at least from its start.

    Started by module name, never by re-importing the caller's ``__main__`` (as
    multiprocessing's spawn does), so a script without a main guard can start one.
    """
    nice = nice_command(niceness)
    process = subprocess.Popen(
        [*(nice or ()), sys.executable, "-m", module, *map(str, args)],
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        **(own_group() if group else {}),
        **popen,
    )
    if niceness:  # its disk priority; and its niceness where ``nice`` could not set it
        lower_priority(process.pid, niceness, cpu=nice is None)
    return process


@contextlib.contextmanager
def main_script_hidden():
    """multiprocessing's spawn runs the parent's ``__main__`` script again in each child it
    starts, to find functions defined there: ours need none, and a script that opens napari
    without an ``if __name__ == "__main__":`` guard opened a viewer in each and the sweep
    never ran. While this holds, children start without it."""
    with _MAIN_HIDDEN:  # one at a time, or one would restore what another hid
        main = sys.modules.get("__main__")
        saved = {name: main.__dict__[name] for name in ("__file__", "__spec__")
                 if main is not None and name in main.__dict__}
        try:
            if main is not None:
                main.__dict__.pop("__file__", None)
                main.__dict__["__spec__"] = None
            yield
        finally:
            if main is not None:
                main.__dict__.update(saved)
                if "__spec__" not in saved:
                    main.__dict__.pop("__spec__", None)


_MAIN_HIDDEN = threading.Lock()


def nice_command(niceness: int) -> list[str] | None:
    """``nice -n N``, which runs a command at ``niceness`` from its first instruction, so
    whatever it starts early inherits it (set from here after the start, it would come
    after the child's first steps); empty when this process is at ``niceness`` or more
    already; None where there is no ``nice``."""
    import shutil

    if not niceness:
        return []
    found = shutil.which("nice") if hasattr(os, "nice") else None
    if found is None:
        return None
    more = niceness - os.nice(0)
    return [found, "-n", str(more)] if more > 0 else []


def lower_priority(pid: int | None = None, niceness: int = 10, *, cpu: bool = True) -> None:
    """Let the caller (a UI) win the CPU (unless not ``cpu``) and the disk; children inherit
    it. ``None``: this process. Silently does nothing where it is not allowed."""
    import psutil

    try:
        process = psutil.Process(pid)
        if cpu:
            process.nice(max(process.nice(), niceness) if pid is None else niceness)
        if hasattr(psutil, "IOPRIO_CLASS_BE"):  # Linux: disk reads queue behind the UI's
            process.ionice(psutil.IOPRIO_CLASS_BE, value=7)
    except (psutil.Error, OSError, ValueError):
        pass


def descendants(pid: int | None = None) -> list[psutil.Process]:
    """Every process below ``pid`` (default: this process), as seen now."""
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def tree(pid: int) -> list[psutil.Process]:
    """``pid`` and every process below it, as seen now (empty when it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def signal_group(pid: int, sig) -> bool:
    """Send ``sig`` to the process group led by ``pid`` (started with ``group=True``)."""
    if not hasattr(os, "killpg"):
        return False
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def stop(processes, grace: float = STOP_GRACE) -> None:
    """SIGTERM the processes, SIGKILL what is left after ``grace`` seconds, reap them."""
    import psutil

    processes = [p for p in processes if p is not None]
    for process in processes:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(processes, timeout=grace)
    kill(alive)
    psutil.wait_procs(alive, timeout=grace)


def kill(processes) -> None:
    """SIGKILL the processes at once (no wait)."""
    import psutil

    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            pass


def stop_tree(pid: int, grace: float = STOP_GRACE, include_root: bool = True) -> None:
    """Stop ``pid`` and everything below it (seen before the first signal, so orphans that
    the root's death reparents are still reached)."""
    import psutil

    family = descendants(pid)
    if include_root:
        try:
            family.append(psutil.Process(pid))
        except psutil.Error:
            pass
    stop(family, grace)


def stop_descendants(grace: float = STOP_GRACE) -> None:
    """Stop every process below this one, and again those started meanwhile: daisy's
    scheduler, which cannot be stopped, replaces the workers that end (they outlived the
    job by a minute, still writing blocks)."""
    for _ in range(STOP_ROUNDS):
        family = descendants()
        if not family:
            return
        stop(family, grace)


def holder_description(pid: int) -> str:
    """``pid 1234 (napari-mutex-watershed segment ...)``, for messages that name a process."""
    import psutil

    try:
        words = psutil.Process(pid).cmdline()
    except psutil.Error:
        return f"pid {pid}"
    text = " ".join(" ".join(words).split())  # one line, whatever the command held
    return f"pid {pid} ({text[:120]}{'...' if len(text) > 120 else ''})" if text else f"pid {pid}"


def exit_at_once(code: int) -> None:
    """End this process once its work is written, without the interpreter's teardown: with
    zarr, dask and daisy loaded that took 0.3 to 1 s after a finished run (measured on the
    job process and the CLI, docs/blockwise.md, *Speed*)."""
    flush_output()
    os._exit(code)


def flush_output() -> None:
    """What this process logged and printed, written out before it ends."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone: nothing left to say
            pass
