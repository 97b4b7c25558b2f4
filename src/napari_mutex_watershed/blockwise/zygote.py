"""Local workers forked from a process that has already imported them.

A worker daisy starts is a new Python that imports zarr, mwatershed and the steps: 0.4 s of
CPU each, while the command and the job are importing too, on every core. So the job process
forks a *zygote* as it starts (``job.start``), before it has any thread of its own; the zygote
imports the steps once and waits. The worker function daisy runs, ``ForkedWorker`` (light to
import), asks the zygote for a worker over a Unix socket, hands it its DAISY_CONTEXT and its
stdout and stderr (daisy's log files), and exits with that worker's status, so a worker that
fails, times out or is killed counts as daisy's own would. The zygote kills a worker whose
daisy process is gone and dies with the job (docs/blockwise.md, *Speed*).

Linux only (abstract socket names, ``PR_SET_PDEATHSIG``); elsewhere, and in a job run in the
caller's process (a library call, tests), daisy's workers start as before.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import socket
import struct
import sys

#: Seconds between two looks of the zygote at its job and its workers.
POLL = 0.05
#: A length or an exit status on the zygote's socket.
_INT = struct.Struct("!i")
#: What ``SO_PEERCRED`` gives: pid, uid, gid.
_CREDENTIALS = struct.Struct("3i")
_PR_SET_PDEATHSIG = 1

_zygote: tuple[int, str] | None = None  # (pid, address) in the job process


def start_zygote() -> None:
    """Fork the zygote (Linux; once per process). Call before starting any thread."""
    global _zygote
    if _zygote is not None or not sys.platform.startswith("linux"):
        return
    address = f"\0napari-mutex-watershed-{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    job = os.getpid()
    try:
        listener.bind(address)
        listener.listen(64)
        pid = os.fork()
    except OSError:  # no zygote: daisy starts the workers
        listener.close()
        return
    if pid == 0:
        try:
            _serve_forks(listener, job)
        finally:
            os._exit(0)
    listener.close()
    _zygote = (pid, address)


def zygote_address() -> str | None:
    """The address of this process's zygote, None without one."""
    return None if _zygote is None else _zygote[1]


def stop_zygote() -> None:
    """A run without local workers (one block, a cluster) lets its zygote go."""
    global _zygote
    if _zygote is None:
        return
    pid, _ = _zygote
    _zygote = None
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


class ForkedWorker:
    """0-argument daisy worker function: a worker forked by the zygote at ``address`` serves
    ``step``; this process exits with that worker's exit status."""

    def __init__(self, step, address: str):
        self.step = pickle.dumps(step)  # unpickled in the fork, which has the step's modules
        self.address = address

    def __call__(self) -> None:
        request = pickle.dumps({"context": os.environ["DAISY_CONTEXT"], "step": self.step})
        sys.stdout.flush()
        sys.stderr.flush()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            try:
                connection.connect(self.address)
            except OSError:  # no zygote (it was let go, or died): start as daisy would
                from .worker import LocalWorker

                LocalWorker(pickle.loads(self.step))()
                return
            socket.send_fds(connection, [_INT.pack(len(request))], [1, 2])
            connection.sendall(request)
            status = _receive(connection, _INT.size)
        # the zygote gone before the worker ended: a failed worker
        code = _INT.unpack(status)[0] if len(status) == _INT.size else 1
        os._exit(code if code >= 0 else 128 - code)  # killed by a signal: as a shell says


def _receive(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        part = connection.recv(size - len(data))
        if not part:
            break
        data += part
    return data


def _die_with_parent() -> None:
    """SIGKILL once the parent is gone (Linux's ``PR_SET_PDEATHSIG``)."""
    import ctypes

    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    except (OSError, AttributeError):
        pass


def _serve_forks(listener: socket.socket, job: int) -> None:
    """The zygote: fork a worker per request, send each requester its worker's exit status,
    kill a worker whose requester is gone; end with the job."""
    _die_with_parent()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # the command reads the job's output until every copy is closed
        os.dup2(devnull, fd)
    os.close(devnull)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    from . import claims, worker  # noqa: F401  (the steps, imported once for every worker)

    workers: dict[int, socket.socket] = {}
    killed: set[int] = set()
    while os.getppid() == job:
        ready, _, _ = select.select([listener, *workers.values()], [], [], POLL)
        for connection in ready:
            if connection is listener:
                try:
                    _fork_worker(listener, workers)
                except (OSError, EOFError, pickle.UnpicklingError, struct.error):
                    pass  # its requester, gone or garbled, exits as a failed worker
                continue
            pid = next(p for p, c in workers.items() if c is connection)
            if pid not in killed and not connection.recv(1):  # its daisy process is gone
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        _reap(workers, killed)


def _fork_worker(listener: socket.socket, workers: dict) -> None:
    connection, _ = listener.accept()
    fds = []
    try:
        # an abstract socket has no file permissions: only our own user may ask (a step is
        # a pickle, which runs code)
        _, uid, _ = _CREDENTIALS.unpack(connection.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size))
        if uid != os.getuid():
            raise PermissionError(f"a request from user {uid}")
        header, fds, _, _ = socket.recv_fds(connection, _INT.size, 2)
        request = pickle.loads(_receive(connection, _INT.unpack(header)[0]))
        pid = os.fork()
    except BaseException:
        connection.close()
        for fd in fds:
            os.close(fd)
        raise
    if pid == 0:
        for other in (listener, *workers.values()):
            other.close()
        # the fork keeps the requester's connection, to tell it its status once its work is
        # written; it dies with the zygote, so the requester still sees both gone
        _run_worker(request, fds, connection)
    for fd in fds:
        os.close(fd)
    workers[pid] = connection


def _run_worker(request: dict, fds: list[int], requester: socket.socket) -> None:
    """In the fork: daisy's log files as stdout and stderr, its context, the step; never
    returns. Its requester hears the exit status before the process gives its memory back
    (70 ms for a worker of a 256^3 run, while the run waits for its last worker); the
    zygote sends it again once it reaps the fork, which counts if the fork was killed."""
    code = 1
    try:
        _die_with_parent()
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in fds:
            os.close(fd)
        os.environ["DAISY_CONTEXT"] = request["context"]
        from .worker import serve

        serve(pickle.loads(request["step"]))
        code = 0
    except BaseException:  # as daisy's own worker would: the traceback to its log
        import traceback

        traceback.print_exc()
    finally:
        from ..processes import flush_output

        flush_output()
        try:
            requester.sendall(_INT.pack(code))
        except OSError:  # the requester is gone
            pass
        os._exit(code)


def _reap(workers: dict, killed: set) -> None:
    """Send the requester of every worker that ended its exit status."""
    while workers:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        killed.discard(pid)
        connection = workers.pop(pid, None)
        if connection is None:
            continue
        try:
            connection.sendall(_INT.pack(os.waitstatus_to_exitcode(status)))
        except OSError:  # the requester is gone
            pass
        connection.close()
