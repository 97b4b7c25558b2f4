"""A full disk and a read-only location: one line each, nothing left behind, and a rerun that
finishes once there is space. Uses small tmpfs mounts (needs root, as in CI)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import zarr

from napari_mutex_watershed.blockwise.disk import allocated_memmap, remove_temporaries
from napari_mutex_watershed.errors import NoSpaceError
from napari_mutex_watershed.storage import write_affinities
from napari_mutex_watershed.synthetic import sample_volume

CLI = [sys.executable, "-m", "napari_mutex_watershed.cli"]


def mount_tmpfs(path, options) -> None:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}); CI runs as root")


@pytest.fixture
def small_disk(tmp_path):
    """A 128 KiB file system (full in the middle of a run below); ``resize(size)``."""
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "size=128k")

    def resize(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)

    yield disk, resize
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_allocated_memmap_names_a_full_disk_instead_of_dying(small_disk):
    """A memory map of a sparse file would SIGBUS on the first write past the free space."""
    disk, _ = small_disk
    with pytest.raises(NoSpaceError, match=f"no space left on device at {disk}"):
        allocated_memmap(disk / "lookup.1.tmp.npy", np.uint32, (2_000_000,))
    assert list(disk.iterdir()) == []
    table = allocated_memmap(disk / "small.1.tmp.npy", np.uint32, (1000,))
    table[:] = 7
    del table
    assert remove_temporaries(disk) == 1 and list(disk.iterdir()) == []


def test_a_full_disk_gets_one_line_and_the_rerun_finishes(small_disk, tmp_path):
    disk, resize = small_disk
    affinities, _, offsets = sample_volume((24, 64, 64), seed=6)
    source = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    output = disk / "o.zarr/labels"
    command = [*CLI, "segment", str(source), str(output), "--block-size", "12", "32", "32",
               "--progress", "none"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: no space left on device at {disk}"), lines[0]
    assert "Traceback" not in result.stderr and "SIGBUS" not in result.stderr
    assert "exit code" not in result.stderr

    resize("64m")
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert not [p for p in disk.rglob("*") if ".tmp." in p.name]
    # the same labels as a run that never lacked space
    clean = tmp_path / "clean.zarr/labels"
    subprocess.run([*command[:-7], str(clean), *command[-6:]], check=True, timeout=600)
    np.testing.assert_array_equal(zarr.open_array(str(output / "0"), mode="r")[...],
                                  zarr.open_array(str(clean / "0"), mode="r")[...])


def test_a_read_only_location_gets_one_line(tmp_path):
    affinities, _, offsets = sample_volume((16, 32, 32), seed=6)
    source = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    locked = tmp_path / "read-only"
    mount_tmpfs(locked, "ro,size=1m")
    try:
        result = subprocess.run([*CLI, "segment", str(source), str(locked / "o.zarr/labels")],
                                capture_output=True, text=True, timeout=600)
    finally:
        subprocess.run(["umount", "-l", str(locked)], check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Read-only file system" in lines[0] and str(locked) in lines[0]


def test_a_read_only_container_gets_one_line(tmp_path):
    """A container mounted read-only, the folder beside it writable: the output's own
    creation fails (it was an unexpected OSError), said in one line, nothing left."""
    affinities, _, offsets = sample_volume((16, 32, 32), seed=6)
    source = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    shared = tmp_path / "shared.zarr"
    zarr.open_group(str(shared), mode="w")
    mount = subprocess.run(["mount", "--bind", str(shared), str(shared)], capture_output=True,
                           text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({mount.stderr.strip()}); CI runs as root")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(shared)], check=True)
        result = subprocess.run([*CLI, "segment", str(source), str(shared / "labels")],
                                capture_output=True, text=True, timeout=600)
    finally:
        subprocess.run(["umount", "-l", str(shared)], check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: cannot write {shared / 'labels'}: Read-only file system at "
        f"{shared / 'labels'}"], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr", "shared.zarr"]


def test_an_output_that_cannot_be_made_is_one_line():
    """A file where a folder goes, no permission, a read-only disk: said, not a bug."""
    import errno

    from napari_mutex_watershed.blockwise.disk import write_refusal

    cases = ((FileExistsError(errno.EEXIST, "File exists", "o.zarr/notes"),
              "cannot write o.zarr/notes/seg: o.zarr/notes is a file, not a folder"),
             (PermissionError(errno.EPERM, "Operation not permitted", "o.zarr/seg"),
              "cannot write o.zarr/notes/seg: Operation not permitted at o.zarr/seg"),
             (OSError(errno.EROFS, "Read-only file system", "o.zarr/seg"),
              "cannot write o.zarr/notes/seg: Read-only file system at o.zarr/seg"))
    for error, line in cases:
        assert str(write_refusal(error, "o.zarr/notes/seg")) == line
    assert write_refusal(OSError(errno.EIO, "I/O error"), "o.zarr/seg") is None
