"""Files of a run on a disk that can fill up: allocated up front, named when space runs out,
and left-over temporaries removed by the next run.

A memory map of a sparse file that cannot grow kills the process with SIGBUS, with no word
about space; allocating the file first turns that into ENOSPC, which we can name.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np

from ..errors import MutexWatershedError, NoSpaceError

#: Mark of files written under a temporary name and renamed when complete.
TEMPORARY_MARK = ".tmp"
NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
#: Free bytes below which a job that died without a word is taken to have filled the disk.
LOW_SPACE = 4 * 2**20


def no_space(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in NO_SPACE


def no_space_error(path) -> NoSpaceError:
    return NoSpaceError(f"no space left on device at {path}: free some space, then run the "
                        "same command again to resume")


def write_refusal(error: OSError, output) -> MutexWatershedError | None:
    """One line for an output that cannot be made where it was asked (a file where a folder
    goes, no permission, a read-only disk); None for any other error."""
    where = error.filename or output
    if isinstance(error, (FileExistsError, NotADirectoryError)):
        return MutexWatershedError(f"cannot write {output}: {where} is a file, not a folder")
    if isinstance(error, PermissionError) or error.errno == errno.EROFS:
        return MutexWatershedError(f"cannot write {output}: {error.strerror} at {where}")
    return None


def temporary_name(path: Path) -> Path:
    """``lookup.npy`` -> ``lookup.<pid>.tmp.npy``: written there, renamed when complete."""
    return path.with_suffix(f".{os.getpid()}{TEMPORARY_MARK}{path.suffix}")


def allocated_memmap(path: Path, dtype, shape) -> np.memmap:
    """``np.lib.format.open_memmap`` in write mode, with every byte allocated on disk."""
    try:
        array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        if hasattr(os, "posix_fallocate"):
            with open(path, "r+b") as handle:
                os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
    except OSError as error:
        Path(path).unlink(missing_ok=True)
        if no_space(error):
            raise no_space_error(Path(path).parent) from None
        raise
    return array


def remove_temporaries(directory: Path) -> int:
    """Delete what an interrupted run left under a temporary name; return how many."""
    removed = 0
    if directory.is_dir():
        for path in directory.glob(f"*{TEMPORARY_MARK}.*"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
