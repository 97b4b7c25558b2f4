"""The process that runs a blockwise job, and cancelling it with everything below it.

daisy checks no signals while it schedules, so the job runs in a child process (``python -m
napari_mutex_watershed.blockwise.job``) and we turn SIGINT or SIGTERM into a stop of that child
and every worker below it (daisy has no cancel of its own). The child starts before the plan
exists and waits for its path on stdin, so its imports overlap our validation instead of
following it. With the path it receives the output's lock (a descriptor passed over a Unix
socket), so the lock lasts as long as the job, even if we die first. Only light modules
here: the CLI starts the child before anything heavy.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

from ..errors import Cancelled
from ..freed_memory import worker_environment
from ..processes import start_module, stop_descendants

JOB_MODULE = "napari_mutex_watershed.blockwise.job"
#: Set (to anything) in the job's environment: log to the terminal too (``--debug``).
DEBUG_ENV = "NAPARI_MUTEX_WATERSHED_DEBUG"
#: A region of one block up to this many voxels (about 0.7 s of kernel on one core) is
#: segmented in the command's own process, with no job process (0.1 s sooner by the
#: median, up to 0.3 s; docs/blockwise.md, *Speed*). A larger one runs in the job process,
#: which Ctrl-C stops at once: in the command's own process a Ctrl-C waits for the kernel.
QUICK_REGION_VOXELS = 2**18
#: Descriptors can travel with the plan's path (POSIX); elsewhere a plain pipe and no lock.
PASSES_DESCRIPTORS = hasattr(socket, "send_fds")


def is_quick(voxels: int) -> bool:
    """Is a region of this many voxels one the command segments in its own process
    (``QUICK_REGION_VOXELS``)?"""
    return 0 < voxels <= QUICK_REGION_VOXELS


#: What a stopped run keeps, and how to go on.
STOPPED = "finished blocks are kept; run the same command again to resume"


class JobProcess:
    """The job's process, started early; ``run`` hands it a plan, ``abandon`` lets it go.

    The child stays in our process group, so whoever started us can also signal the group.
    """

    def __init__(self):
        # the job forks its local workers (``zygote``): they keep its malloc settings
        env = worker_environment()
        self._sent = False
        if PASSES_DESCRIPTORS:
            self._channel, theirs = socket.socketpair()
            self.process = start_module(JOB_MODULE, stdin=theirs, env=env)
            theirs.close()
        else:
            self._channel = None
            self.process = start_module(JOB_MODULE, stdin=subprocess.PIPE, text=True, env=env)

    def _send(self, text: str, lock_fd: int | None) -> None:
        self._sent = True
        if self._channel is None:
            self.process.stdin.write(text)
            self.process.stdin.close()
            return
        fds = [lock_fd] if lock_fd is not None else []
        socket.send_fds(self._channel, [text.encode()], fds)
        self._close()

    def _close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        elif self.process.stdin:
            self.process.stdin.close()

    def abandon(self) -> None:
        """No plan after all (the request was invalid, the run complete or done here). Before
        it has a plan the child only imports, so it is killed rather than waited for (up to
        0.4 s); once it has one, it is only waited for."""
        if self.process.poll() is None:
            self._close()
            if not self._sent:
                self.process.kill()
            self.process.wait(timeout=30)

    def run(self, plan_path: str | Path, lock_fd: int | None = None) -> int:
        """Run the plan; return the job's exit code. On SIGINT, SIGTERM or SIGHUP (a closed
        terminal, a lost ssh session) stop it and every worker below it and raise
        Cancelled."""
        cancelled = []

        def cancel(signum, _frame):
            cancelled.append(signum)
            stop_descendants()

        # signal handlers can only be set from the main thread; elsewhere the caller cancels
        on_main = threading.current_thread() is threading.main_thread()
        # SIGHUP ignored stays ignored: ``nohup`` keeps a run going when the terminal goes
        hangup = getattr(signal, "SIGHUP", None)
        signals = (signal.SIGINT, signal.SIGTERM) + (
            (hangup,) if hangup is not None and signal.getsignal(hangup) is not signal.SIG_IGN
            else ()) if on_main else ()
        previous = {s: signal.signal(s, cancel) for s in signals}
        try:
            self._send(f"{plan_path}\n", lock_fd)
            code = self.process.wait()
        except (BrokenPipeError, ConnectionError):  # the child died before it read the plan
            code = self.process.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if cancelled:
            raise Cancelled(f"cancelled: {STOPPED}")
        return code

    @staticmethod
    def error_message(plan, code: int) -> str:
        """The job's own one line (``error.txt``), else what its end says; with the log."""
        from .disk import LOW_SPACE, no_space_error
        from .fatal import ERROR_FILE, LOG_FILE, read_text

        work_dir = Path(plan.work_dir)
        message = read_text(work_dir / ERROR_FILE)
        if message is None:
            # daisy's own memory-mapped files die with SIGBUS when they cannot grow
            if shutil.disk_usage(work_dir).free < LOW_SPACE:
                message = str(no_space_error(work_dir))
            elif code == -getattr(signal, "SIGBUS", 7):
                message = ("the blockwise job died of SIGBUS: a memory-mapped file could not "
                           "be read or written")
            else:
                message = f"the blockwise job stopped with exit code {code}"
        return f"{message} (log: {work_dir / LOG_FILE})"


def receive_plan(stdin) -> tuple[str, list[int]]:
    """The job's side of ``JobProcess.run``: the plan's path ('' for none) and the
    descriptors that came with it (kept open for the job's lifetime: they hold the lock)."""
    if PASSES_DESCRIPTORS:
        try:
            channel = socket.socket(fileno=stdin.fileno())
        except OSError:  # started by hand, stdin is no socket
            return stdin.readline().strip(), []
        message, fds, _, _ = socket.recv_fds(channel, 4096, 4)
        channel.detach()
        return message.decode().strip(), fds
    return stdin.readline().strip(), []
