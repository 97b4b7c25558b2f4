"""One run per output at a time: an exclusive lock that the operating system drops when its
holder dies, even by SIGKILL.

The lock file sits beside the run's work folder, not in it, so that ``--overwrite`` (which
empties the work folder) never removes a lock another run holds. Its content names the holder
for the message a second run gets. The descriptor travels to the job process with its plan
(``supervise``): the lock then lasts while any process holding it lives.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import MutexWatershedError, OutputInUseError
from ..processes import holder_description

try:
    import fcntl
except ImportError:  # not POSIX: no lock, as before
    fcntl = None


#: The lock file's suffix: the lock of dataset ``seg`` is ``seg.lock`` beside its work folder.
LOCK_SUFFIX = ".lock"


def lock_path(work_dir: Path) -> Path:
    return Path(work_dir).with_name(Path(work_dir).name + LOCK_SUFFIX)


class RunLock:
    """``with RunLock(work_dir, output): ...`` holds the output's lock or raises
    OutputInUseError at once."""

    def __init__(self, work_dir: str | Path, output: str | Path | None = None):
        self.path = lock_path(Path(work_dir))
        self.output = output or work_dir
        self.fd: int | None = None
        self._made: list[Path] = []  # what acquire created, for ``discard``

    def acquire(self) -> RunLock:
        try:
            missing = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
            self._made = [*missing, self.path] if not self.path.exists() else missing
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:
            self._remove_made()
            raise MutexWatershedError(
                f"cannot write beside {self.output}: permission denied at {self.path.parent}"
            ) from None
        except OSError as error:
            self._remove_made()
            raise _refusal(self.output, self.path.parent, error) from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputInUseError(
                    f"{self.output} is in use by {holder}: wait for that run to finish or "
                    "stop it, then run again"
                ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        except OSError as error:  # a full disk: nothing of this run is left behind
            os.close(fd)
            self._remove_made()
            raise _refusal(self.output, self.path.parent, error) from None
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the lock
            self.fd = None

    def discard(self) -> None:
        """Release, and remove the lock file and folders this lock created: a run that was
        refused before it started leaves nothing beside the output."""
        held = self.fd is not None
        self.release()
        if held:
            self._remove_made()

    def _remove_made(self) -> None:
        if self.path in self._made:
            self.path.unlink(missing_ok=True)
        for folder in (p for p in self._made if p != self.path):
            try:
                folder.rmdir()  # only if empty
            except OSError:
                break

    def __enter__(self) -> RunLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()


def _refusal(output, folder: Path, error: OSError) -> MutexWatershedError:
    """One line for a lock that cannot be made: a full disk says so as a run would."""
    from .disk import no_space, no_space_error  # (numpy: only when it fails)

    if no_space(error):
        return no_space_error(folder)
    return MutexWatershedError(f"cannot write beside {output}: {error.strerror} at {folder}")


def note_job(fd: int) -> None:
    """The job process that received the lock adds its pid: it holds the lock the longest."""
    try:
        os.pwrite(fd, f"job {os.getpid()}\n".encode(), os.fstat(fd).st_size)
    except OSError:
        pass


def _read_holder(fd: int) -> str:
    """The first holder still alive (the command that started the run, else its job)."""
    import psutil  # only when the lock is taken: see processes

    try:
        lines = os.pread(fd, 400, 0).decode(errors="replace").splitlines()
    except OSError:
        return "another process"
    first = lines[0].split() if lines else []
    since = " ".join(first[1:3])
    candidates = [first[0]] if first else []
    candidates += [line.split()[1] for line in lines[1:] if line.startswith("job ")]
    for pid in candidates:
        try:
            if psutil.pid_exists(int(pid)):
                return holder_description(int(pid)) + (f", since {since}" if since else "")
        except ValueError:
            continue
    return "another process"
