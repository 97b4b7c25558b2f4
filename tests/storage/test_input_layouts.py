"""Every input layout users have, through the CLI, gives the segmentation of a plain zarr
array of the same values (issue 20): zarr v2/v3 without metadata (at the root of a store and
in a group), DaCapo/daisy ``resolution`` + ``offset``, funlib, OME-Zarr 0.4 and 0.5 (image
group and level), N5 and HDF5. Small synthetic volumes, nothing downloaded."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest
import tensorstore as ts
import zarr
from funlib.persistence import open_ds

from napari_mutex_watershed.errors import InvalidInputError
from napari_mutex_watershed.storage import open_affinities, write_affinities
from napari_mutex_watershed.storage.paths import DEFAULT_INPUT, stored_voxels
from napari_mutex_watershed.synthetic import sample_volume

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "napari_mutex_watershed.cli"]
SHAPE = (16, 48, 48)
VOXEL, OFFSET = (8, 4, 4), (80, 40, 40)
BLOCK = ("--block-size", "8", "24", "24")


@pytest.fixture(scope="module")
def affinities():
    affs, _, offsets = sample_volume(SHAPE, seed=4)
    return affs, offsets


def segment(source, output, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + ["segment", str(source), str(output), *BLOCK, "--progress",
                                 "none", *extra], capture_output=True, text=True, timeout=300)


def level0(output):
    return zarr.open_array(str(output / "0"), mode="r")[:]


@pytest.fixture(scope="module")
def reference(affinities, tmp_path_factory):
    """The plain zarr array (funlib metadata) and its segmentation."""
    affs, offsets = affinities
    root = tmp_path_factory.mktemp("reference")
    source = write_affinities(root / "plain.zarr/affinities", affs, offsets,
                              voxel_size=VOXEL, offset=OFFSET)
    done = segment(source, root / "plain.zarr/labels")
    assert done.returncode == 0, done.stderr
    labels = level0(root / "plain.zarr/labels")
    assert len(np.unique(labels)) > 8  # a real segmentation: equality below means something
    return labels


# ---------------------------------------------------------------------------- layouts
def zarr_bare(path, affs, zarr_format, **attributes):
    zarr.create_array(str(path), data=affs, chunks=(6, 8, 16, 16), zarr_format=zarr_format,
                      attributes=attributes or None)


def ome(path, affs, version: str, scale=(1, *VOXEL), translation=(0, *OFFSET),
        unit="nanometer"):
    """An OME-Zarr image as other tools write it: channel axis first, two levels."""
    zarr_format = 3 if version == "0.5" else 2
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    root.create_array("s0", data=affs, chunks=(6, 8, 16, 16))
    root.create_array("s1", data=affs[:, :, ::2, ::2].copy(), chunks=(6, 8, 16, 16))
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": unit} for n in "zyx"]
    multiscale = {"axes": axes, "datasets": [
        {"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": list(scale)},
            {"type": "translation", "translation": list(translation)}]},
        {"path": "s1", "coordinateTransformations": [
            {"type": "scale", "scale": [scale[0], scale[1], 2 * scale[2], 2 * scale[3]]},
            {"type": "translation", "translation": list(translation)}]}]}
    if version == "0.5":
        root.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
    else:
        root.attrs["multiscales"] = [{**multiscale, "version": "0.4"}]


def ome_scaled_after(path, affs):
    """OME-Zarr 0.5 whose levels are in voxels (scale 1, translation in voxels) and whose
    multiscale scales them: its translation is scaled too (applied in order)."""
    ome(path, affs, "0.5", scale=(1, 1, 1, 1),
        translation=(0, *[o // v for o, v in zip(OFFSET, VOXEL)]))
    root = zarr.open_group(str(path), mode="r+")
    attributes = root.attrs["ome"]
    attributes["multiscales"][0]["coordinateTransformations"] = [
        {"type": "scale", "scale": [1, *VOXEL]}]
    root.attrs["ome"] = attributes


def n5(path, affs, **attributes):
    """An N5 dataset as Java N5 / z5 / DaCapo write it: fastest axis first, ``resolution``
    and ``offset`` for the spatial axes only (which tensorstore itself refuses)."""
    store = ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(path)},
                     "metadata": {"dimensions": list(affs.shape[::-1]),
                                  "blockSize": [16, 16, 8, 6], "dataType": "float32",
                                  "compression": {"type": "gzip"}},
                     "create": True}).result()
    store[...] = affs.T
    meta = path / "attributes.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), **attributes}))


def hdf5(path, dataset, affs, **attributes):
    with h5py.File(path, "w") as f:
        chunks = tuple(min(c, n) for c, n in zip((6, 8, 16, 16), affs.shape))
        data = f.create_dataset(dataset, data=affs, chunks=chunks, compression="gzip")
        data.attrs.update(attributes)


def offsets_list(offsets):
    return [list(o) for o in offsets]


LAYOUTS = {
    # name: (builder(root, affs, offsets) -> input path, expected voxel size, offset, note)
    "zarr v2 at the root of a store, no metadata": (
        lambda r, a, o: (zarr_bare(r / "v2.zarr", a, 2), r / "v2.zarr")[1],
        (1, 1, 1), (0, 0, 0), True),
    "zarr v3 in a group, no metadata": (
        lambda r, a, o: (zarr.open_group(str(r / "v3.zarr"), mode="w"),
                         zarr_bare(r / "v3.zarr/raw/affs", a, 3), r / "v3.zarr/raw/affs")[2],
        (1, 1, 1), (0, 0, 0), True),
    "zarr v2 with DaCapo resolution and offset": (
        lambda r, a, o: (zarr_bare(r / "dacapo.zarr/affs", a, 2, resolution=list(VOXEL),
                                   offset=list(OFFSET), offsets=offsets_list(o)),
                         r / "dacapo.zarr/affs")[1],
        VOXEL, OFFSET, False),
    "zarr v3 with funlib metadata": (
        lambda r, a, o: write_affinities(r / "funlib.zarr/affinities", a, o, voxel_size=VOXEL,
                                         offset=OFFSET),
        VOXEL, OFFSET, False),
    "OME-Zarr 0.5 image group": (
        lambda r, a, o: (ome(r / "image5.ome.zarr", a, "0.5"), r / "image5.ome.zarr")[1],
        VOXEL, OFFSET, False),
    "OME-Zarr 0.5 level": (
        lambda r, a, o: (ome(r / "level5.ome.zarr", a, "0.5"), r / "level5.ome.zarr/s0")[1],
        VOXEL, OFFSET, False),
    "OME-Zarr 0.5 image scaled by its multiscale": (
        lambda r, a, o: (ome_scaled_after(r / "after.ome.zarr", a), r / "after.ome.zarr")[1],
        VOXEL, OFFSET, False),
    "OME-Zarr 0.4 image group": (
        lambda r, a, o: (ome(r / "image4.ome.zarr", a, "0.4"), r / "image4.ome.zarr")[1],
        VOXEL, OFFSET, False),
    "OME-Zarr 0.4 level in micrometres": (
        lambda r, a, o: (ome(r / "level4.ome.zarr", a, "0.4",
                             scale=(1, 0.008, 0.004, 0.004), translation=(0, 0.08, 0.04, 0.04),
                             unit="micrometer"),
                         r / "level4.ome.zarr/s0")[1],
        VOXEL, OFFSET, False),
    "OME-Zarr 0.5 level in fractional nanometres (light microscopy)": (
        lambda r, a, o: (ome(r / "light.ome.zarr", a, "0.5",
                             scale=(1, 0.0025, 0.0001625, 0.0001625),
                             translation=(0, 0.005, 0.000325, 0.000325), unit="millimeter"),
                         r / "light.ome.zarr")[1],
        (2500000, 162500, 162500), (5000000, 325000, 325000), False),
    "zarr v3 with funlib metadata in fractional nanometres": (
        lambda r, a, o: (zarr_bare(r / "fraction.zarr/affs", a, 3, voxel_size=[8, 4.5, 4.5],
                                   offset=list(OFFSET), units=["nm"] * 3,
                                   axis_names=["c^", "z", "y", "x"], offsets=offsets_list(o)),
                         r / "fraction.zarr/affs")[1],
        (8000, 4500, 4500), tuple(1000 * v for v in OFFSET), False),
    "N5 with DaCapo resolution and offset": (
        lambda r, a, o: (n5(r / "volume.n5/affs", a, resolution=list(VOXEL[::-1]),
                            offset=list(OFFSET[::-1]), offsets=offsets_list(o)),
                         r / "volume.n5/affs")[1],
        VOXEL, OFFSET, False),
    "HDF5 (.h5) with resolution and offset": (
        lambda r, a, o: (hdf5(r / "volume.h5", "volumes/affs", a, resolution=VOXEL,
                              offset=OFFSET), r / "volume.h5/volumes/affs")[1],
        VOXEL, OFFSET, False),
    "zarr v2 big-endian (>f4, as older numpy pipelines wrote) with DaCapo metadata": (
        lambda r, a, o: (zarr_bare(r / "big.zarr/affs", a.astype(">f4"), 2,
                                   resolution=list(VOXEL), offset=list(OFFSET),
                                   offsets=offsets_list(o)), r / "big.zarr/affs")[1],
        VOXEL, OFFSET, False),
    "HDF5 big-endian (>f4) with resolution and offset": (
        lambda r, a, o: (hdf5(r / "big.h5", "affs", a.astype(">f4"), resolution=VOXEL,
                              offset=OFFSET), r / "big.h5/affs")[1],
        VOXEL, OFFSET, False),
    "HDF5 (.hdf5) without metadata": (
        lambda r, a, o: (hdf5(r / "volume.hdf5", "affs", a), r / "volume.hdf5/affs")[1],
        (1, 1, 1), (0, 0, 0), True),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_segments_like_a_plain_zarr_array(layout, affinities, reference, tmp_path):
    affs, offsets = affinities
    build, voxel_size, offset, assumed = LAYOUTS[layout]
    source = build(tmp_path, affs, offsets)
    opened = open_affinities(source)
    np.testing.assert_array_equal(np.asarray(opened.array.data), affs)  # lazy, same values
    assert tuple(opened.voxel_size) == voxel_size
    done = segment(source, tmp_path / "out.zarr/labels")
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(level0(tmp_path / "out.zarr/labels"), reference)
    labels = open_ds(str(tmp_path / "out.zarr/labels/0"))
    assert tuple(labels.voxel_size) == voxel_size and tuple(labels.offset) == offset
    # one line says each thing assumed, only when it was: the geometry, the offsets
    notes = [line for line in done.stderr.splitlines() if "assumed" in line]
    geometry = [line for line in notes if "channel first, voxel size 1, offset 0" in line]
    defaults = [line for line in notes if "no offsets stored: assumed the 3D defaults" in line]
    assert len(geometry) == (1 if assumed else 0), done.stderr
    assert len(defaults) == (1 if opened.offsets is None else 0), done.stderr
    assert len(notes) == len(geometry) + len(defaults), done.stderr


def test_geometry_funlib_would_truncate_or_cannot_read_is_one_line(affinities, tmp_path):
    """funlib makes 4.5 nm voxels 4 nm: without a length unit to convert them, refused."""
    affs, _ = affinities
    cases = {"unitless.zarr": ({"resolution": [8, 4.5, 4.5]}, "has voxel size (8, 4.5, 4.5)"
                               " and offset (0, 0, 0): not whole numbers, and it stores no "
                               "unit for"),
             "pixels.zarr": ({"voxel_size": [1, 1, 1], "offset": [0, 0.5, 0],
                              "units": ["px"] * 3}, "its units ('px', 'px', 'px') are not"),
             "text.zarr": ({"resolution": "8,4,4"},
                           "its resolution attribute '8,4,4' is not a list of numbers")}
    for name, (attributes, expected) in cases.items():
        zarr_bare(tmp_path / name, affs, 2, **attributes)
        with pytest.raises(InvalidInputError, match=re.escape(expected)):
            open_affinities(tmp_path / name)
        done = segment(tmp_path / name, tmp_path / "o.zarr")
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        assert expected in done.stderr
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_command_reads_the_size_of_a_run_from_metadata_alone(layout, affinities, tmp_path):
    """What decides, before numpy and zarr are imported, whether a job process starts."""
    affs, offsets = affinities
    source = LAYOUTS[layout][0](tmp_path, affs, offsets)
    expected = None if layout.startswith("HDF5") else int(np.prod(SHAPE))
    assert stored_voxels(source, DEFAULT_INPUT) == expected
    assert stored_voxels(tmp_path / "absent.zarr/affs", DEFAULT_INPUT) is None


def test_unknown_layouts_get_one_line_listing_what_is_accepted(tmp_path):
    (tmp_path / "odd.zarr/thing").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("x")
    hdf5(tmp_path / "v.h5", "affs", np.zeros((6, 4, 4, 4), np.float32))
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w").create_group("inner")
    for source, expected in [
        (tmp_path / "odd.zarr/thing", "is not a zarr array or group; accepted: zarr v2/v3"),
        (tmp_path / "notes.txt", "accepted: zarr v2/v3 arrays"),
        (tmp_path / "v.h5/missing", "has no dataset 'missing'; its datasets: affs"),
        (tmp_path / "group.zarr/inner", "is a zarr group, not an array or an OME-Zarr image"),
        (tmp_path / "nothing.n5/affs", "the path does not exist"),
    ]:
        with pytest.raises(InvalidInputError, match=expected):
            open_affinities(source)
        done = segment(source, tmp_path / "o.zarr")
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1 and expected.split(";")[0] in done.stderr, done.stderr
