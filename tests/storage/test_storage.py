"""Zarr input and output: round trips, what other readers see, refusals and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds

from napari_mutex_watershed import WatershedParameters, segment
from napari_mutex_watershed.errors import InvalidInputError, OutputExistsError
from napari_mutex_watershed.parameters import OFFSETS_2D, OFFSETS_3D, offsets_text
from napari_mutex_watershed.storage import (
    PARAMETERS_ATTR,
    open_affinities,
    parameters_for,
    prepare_labels,
    split_path,
    stored_parameters,
    write_affinities,
    write_labels,
)
from napari_mutex_watershed.storage.paths import container_kind, update_attributes, write_group
from napari_mutex_watershed.synthetic import sample_volume


@pytest.fixture(scope="module")
def small_sample():
    return sample_volume((12, 20, 24))


@pytest.fixture
def stored(tmp_path, small_sample):
    affs, _, offsets = small_sample
    path = write_affinities(tmp_path / "volume.zarr", affs, offsets, voxel_size=(4, 2, 2),
                            offset=(8, 4, 4))
    return path


def test_split_path():
    assert split_path("a/b.zarr/seg/labels", "x") == (Path("a/b.zarr"), "seg/labels")
    assert split_path("a/b.zarr", "labels") == (Path("a/b.zarr"), "labels")
    assert split_path("c.n5/affs", "x") == (Path("c.n5"), "affs")
    # container suffixes in any case (AFFS.H5 was refused as no container)
    assert split_path("AFFS.H5/flat", "x") == (Path("AFFS.H5"), "flat")
    assert container_kind(Path("AFFS.H5")) == "hdf5"
    assert container_kind(Path("v.N5")) == "n5"


def test_affinities_round_trip(stored, small_sample, tmp_path):
    affs, _, offsets = small_sample
    assert stored == tmp_path / "volume.zarr" / "affinities"
    opened = open_affinities(tmp_path / "volume.zarr")  # bare container: its affinities
    assert opened.path == stored
    assert opened.offsets == offsets
    assert opened.num_channels == 6
    assert opened.voxel_size == Coordinate(4, 2, 2)
    assert opened.spatial_roi == Roi((8, 4, 4), (48, 40, 48))
    assert opened.array.axis_names == ["c^", "z", "y", "x"]
    np.testing.assert_array_equal(opened.array[opened.array.roi], affs)
    assert opened.array.dtype == np.float32


def test_uint8_and_2d_round_trip(tmp_path):
    affs, _, offsets = sample_volume((30, 40), dtype=np.uint8)
    write_affinities(tmp_path / "flat.zarr/raw/affs", affs, offsets)
    opened = open_affinities(tmp_path / "flat.zarr/raw/affs")
    assert opened.offsets == offsets and opened.array.dtype == np.uint8
    assert opened.array.axis_names == ["c^", "y", "x"]
    np.testing.assert_array_equal(opened.array[opened.array.roi], affs)


def test_segment_reads_stored_affinities(stored, small_sample):
    affs, _, offsets = small_sample
    expected = segment(affs, WatershedParameters(offsets=offsets))
    opened = open_affinities(stored)
    assert np.array_equal(segment(opened.array.data, WatershedParameters(offsets=offsets)),
                          expected)  # dask
    as_zarr = zarr.open(str(stored), mode="r")
    assert np.array_equal(segment(as_zarr, WatershedParameters(offsets=offsets)), expected)


def test_offsets_from_array_unless_given(stored):
    opened = open_affinities(stored)
    opened.offsets = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 0, 0), (0, 5, 0), (0, 0, 5)]
    taken = parameters_for(opened, WatershedParameters(bias_short=0.4))
    assert taken.offsets == opened.offsets and taken.bias_short == 0.4
    explicit = WatershedParameters(offsets=[(1, 0, 0), (0, 1, 0), (0, 0, 1)], channels=[0, 1, 2])
    assert parameters_for(opened, explicit).offsets == explicit.offsets
    # chosen channels take their own offsets (the array's are one per channel)
    chosen = parameters_for(opened, {"channels": [3, 4, 5], "bias": [0.3, 0.4, 0.5]})
    assert chosen.offsets == opened.offsets[3:] and chosen.channels == [3, 4, 5]
    opened.offsets = None
    assert parameters_for(opened, explicit) is explicit
    assert parameters_for(opened, {"channels": [0, 4]}).offsets == [(1, 0, 0), (0, 9, 0)]


def test_a_bias_per_offset_is_checked_against_the_array_s_offsets(tmp_path, small_sample):
    """A bias each (or strides) may be given before the offsets are known: the array's."""
    affs, _, offsets = small_sample
    opened = open_affinities(write_affinities(tmp_path / "v.zarr", affs[:3], offsets[:3]))
    taken = parameters_for(opened, {"bias": [0.4, 0.5, 0.6], "strides": [1, 2, 2]})
    assert taken.offsets == offsets[:3] and taken.bias == [0.4, 0.5, 0.6]
    with pytest.raises(InvalidInputError, match="bias has 6 values for 3 offsets"):
        parameters_for(opened, WatershedParameters(bias=[0.5] * 6))
    with pytest.raises(InvalidInputError, match="has 3 channels but there are 6 offsets"):
        parameters_for(opened, WatershedParameters(offsets=offsets))
    with pytest.raises(InvalidInputError, match="channel 3 does not exist: the input has 3"):
        parameters_for(opened, WatershedParameters(offsets=offsets[:3], channels=[0, 1, 3]))
    with pytest.raises(InvalidInputError, match="the affinities are 3D but the offsets are 2D"):
        parameters_for(opened, WatershedParameters(offsets=[(1, 0), (0, 1), (2, 2)]))


@pytest.mark.parametrize("spatial, defaults", [(3, OFFSETS_3D), (2, OFFSETS_2D)])
def test_without_offsets_those_of_the_array_s_dimension_are_assumed_and_said(
        tmp_path, caplog, spatial, defaults):
    path = tmp_path / "plain.zarr/affinities"
    zarr.create_array(str(path), data=np.full((len(defaults),) + (8,) * spatial, 0.5,
                                              np.float32))
    taken = parameters_for(open_affinities(path), None)
    assert taken.offsets == defaults
    assert f"no offsets stored: assumed the {spatial}D defaults {offsets_text(defaults)}" in (
        caplog.text)


def test_labels_readable_by_plain_zarr_and_funlib(tmp_path, small_sample):
    _, truth, _ = small_sample
    parameters = WatershedParameters(min_size=5)
    path = write_labels(tmp_path / "out.zarr", truth, voxel_size=(4, 2, 2), offset=(8, 4, 4),
                        attributes={PARAMETERS_ATTR: parameters.to_json()})
    assert path == tmp_path / "out.zarr" / "labels"
    group = zarr.open(str(tmp_path / "out.zarr"), mode="r")
    assert isinstance(group, zarr.Group) and "labels" in group
    plain = zarr.open(str(path), mode="r")
    assert plain.shape == truth.shape and plain.dtype == truth.dtype
    np.testing.assert_array_equal(plain[:], truth)
    attrs = dict(plain.attrs)
    assert attrs["voxel_size"] == [4, 2, 2] and attrs["offset"] == [8, 4, 4]
    assert attrs["axis_names"] == ["z", "y", "x"]
    array = open_ds(str(path))
    assert array.roi == Roi((8, 4, 4), (48, 40, 48)) and array.voxel_size == Coordinate(4, 2, 2)
    np.testing.assert_array_equal(array.to_ndarray(array.roi), truth)
    # reads reaching outside come back filled
    grown = array.roi.grow(Coordinate(4, 2, 2), Coordinate(0, 0, 0))
    assert array.to_ndarray(grown, fill_value=0)[0].max() == 0
    assert stored_parameters(array) == parameters


def test_prepare_labels_copies_geometry_and_provenance(stored, tmp_path):
    opened = open_affinities(stored)
    parameters = WatershedParameters(threshold=0.2, offsets=opened.offsets)
    level0 = prepare_labels(tmp_path / "seg.zarr", opened, chunk_shape=(6, 10, 12),
                            overwrite=False,
                            attributes={PARAMETERS_ATTR: json.loads(parameters.to_json())})
    assert level0 == tmp_path / "seg.zarr" / "labels" / "0"
    # OME-Zarr labels: level 0 holds the full resolution, with funlib's attributes
    out = open_ds(str(level0))
    assert out.roi == opened.spatial_roi == opened.array.roi
    assert out.voxel_size == opened.voxel_size == opened.array.voxel_size
    assert out.units == opened.array.units
    assert out.dtype == np.uint32 and out.axis_names == ["z", "y", "x"]
    # funlib's Array.chunk_shape reports dask chunks; the zarr chunks are what was asked
    assert zarr.open(str(level0), mode="r").chunks == (6, 10, 12)
    assert stored_parameters(out) == parameters  # stored as an object, not a string
    group = zarr.open_group(str(tmp_path / "seg.zarr" / "labels"), mode="r")
    assert stored_parameters(group) == parameters


def test_stored_parameters_absent(tmp_path):
    path = write_labels(tmp_path / "gt.zarr", np.ones((4, 4), np.uint8))
    assert stored_parameters(open_ds(str(path))) is None


def test_refuses_to_overwrite(stored, small_sample):
    affs, _, offsets = small_sample
    with pytest.raises(OutputExistsError, match="already exists"):
        write_affinities(stored, affs, offsets)
    assert isinstance(OutputExistsError("x"), FileExistsError)


def test_overwrite_replaces(stored, small_sample):
    affs, _, offsets = small_sample
    write_affinities(stored, affs[:3] * 0, offsets[:3], overwrite=True)
    opened = open_affinities(stored)
    assert opened.num_channels == 3 and opened.offsets == offsets[:3]
    assert not np.asarray(opened.array.data).any()


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInputError, match="the path does not exist"):
        open_affinities(tmp_path / "nothing.zarr")
    with pytest.raises(InvalidInputError, match=r"no affinities at .*volume.zarr/missing"):
        open_affinities(tmp_path / "volume.zarr" / "missing")


def test_a_path_that_names_no_array_lists_those_the_container_holds(tmp_path, small_sample):
    affs, truth, offsets = small_sample
    write_affinities(tmp_path / "v.zarr/raw/affs", affs, offsets)
    write_labels(tmp_path / "v.zarr/gt", truth)  # an OME-Zarr image: named, not its levels
    (tmp_path / "v.zarr/notes").mkdir()
    with pytest.raises(InvalidInputError, match=r"v.zarr/affinities: the path does not exist; "
                       r"\S*v.zarr holds gt, raw/affs$"):
        open_affinities(tmp_path / "v.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(InvalidInputError, match=r"empty.zarr holds no arrays$"):
        open_affinities(tmp_path / "empty.zarr/affs")


def test_path_outside_a_container_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInputError, match="is not inside a .zarr or .n5 container"):
        open_affinities(tmp_path / "plain" / "affinities")
    with pytest.raises(InvalidInputError, match="is not inside a .zarr or .n5 container"):
        write_labels(tmp_path / "labels.tif", np.ones((2, 2), np.uint8))


def test_labels_are_not_affinities(tmp_path):
    path = write_labels(tmp_path / "gt.zarr", np.ones((4, 5, 6), np.uint32))
    with pytest.raises(InvalidInputError, match="expected \\(c\\^, \\[z,\\] y, x\\) affinities"):
        open_affinities(path)


def test_unreadable_store_is_a_clear_error(tmp_path):
    bogus = tmp_path / "broken.zarr" / "affinities"
    bogus.mkdir(parents=True)
    (bogus / "zarr.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="cannot open"):
        open_affinities(bogus)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_groups_and_attributes_written_here_are_zarr_s(tmp_path, zarr_format):
    """Groups and attribute updates go to the JSON directly (no zarr round trip): zarr, and
    so every reader built on it, sees what zarr would have written."""
    write_group(tmp_path / "c.zarr", zarr_format)
    write_group(tmp_path / "c.zarr" / "seg", zarr_format, {"name": "seg", "n": [1, 2]})
    zarr.create_array(tmp_path / "c.zarr" / "seg" / "a", shape=(4,), dtype="uint8",
                      zarr_format=zarr_format, attributes={"kept": 1})
    update_attributes(tmp_path / "c.zarr" / "seg", {"n": [3], "added": True})
    update_attributes(tmp_path / "c.zarr" / "seg" / "a", {"added": "yes"})
    root = zarr.open_group(tmp_path / "c.zarr", mode="r", zarr_format=zarr_format)
    assert root.metadata.zarr_format == zarr_format and dict(root.attrs) == {}
    assert dict(root["seg"].attrs) == {"name": "seg", "n": [3], "added": True}
    assert dict(root["seg/a"].attrs) == {"kept": 1, "added": "yes"}
    assert not list((tmp_path / "c.zarr").rglob("*.partial"))
    with pytest.raises(FileNotFoundError):
        update_attributes(tmp_path / "c.zarr" / "absent", {"n": 1})


def test_an_output_inside_an_array_is_one_line_and_keeps_it(tmp_path, stored):
    """zarr's own error here was an 'unexpected ContainsArrayError' with a traceback."""
    inside = Path(stored) / "labels"
    with pytest.raises(InvalidInputError, match=r"is a zarr array: an output cannot go inside"):
        write_labels(inside, np.ones((2, 2, 2), np.uint32))
    assert not inside.exists() and open_affinities(stored).shape == (6, 12, 20, 24)


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("dtype", ["uint8", "uint32", "uint64", "float32"])
def test_arrays_created_here_are_zarr_s(tmp_path, zarr_format, dtype, zarr_round_trips,
                                         monkeypatch):
    """zarr makes the metadata of the first array of a kind (in memory); the next ones are
    it with their own shape, chunks, attributes and axis names: the files equal zarr's."""
    from napari_mutex_watershed.storage import outputs

    monkeypatch.setattr(outputs, "_TEMPLATES", {})
    for shape, chunks, axes in (((5, 7), (2, 7), ["y", "x"]),
                                ((3, 40, 50, 60), (3, 16, 32, 64), ["c^", "z", "y", "x"])):
        attributes = {"voxel_size": [4, 2], "nested": {"a": [1.5, None], "b": "µm"}}
        zarrs, ours = tmp_path / f"zarr{len(shape)}", tmp_path / f"ours{len(shape)}"
        zarr.create_array(
            store=str(zarrs), shape=shape, dtype=dtype, chunks=chunks, fill_value=0,
            zarr_format=zarr_format, attributes=attributes,
            dimension_names=[a.rstrip("^") for a in axes] if zarr_format == 3 else None,
            chunk_key_encoding={"name": "v2", "separator": "/"} if zarr_format == 2 else None)
        zarr_round_trips.clear()
        outputs._create(ours, shape, dtype, chunks, zarr_format, attributes, axes)
        assert len(zarr_round_trips) == (1 if len(shape) == 2 else 0)  # the kind's first
        assert sorted(p.name for p in ours.iterdir()) == sorted(p.name for p in zarrs.iterdir())
        for name in (p.name for p in zarrs.iterdir()):
            assert json.loads((ours / name).read_bytes()) == json.loads(
                (zarrs / name).read_bytes()), name
        array = zarr.open_array(str(ours), mode="r+")
        array[...] = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
        np.testing.assert_array_equal(zarr.open_array(str(ours), mode="r")[...], array[...])


def test_what_was_assumed_is_said_once_per_process(tmp_path, caplog):
    """A widget opens its input for every preview, run and sweep: the same line each time
    filled its log."""
    path = tmp_path / "plain.zarr/affinities"
    zarr.create_array(str(path), data=np.full((6, 8, 8, 8), 0.5, np.float32))
    for _ in range(3):
        parameters_for(open_affinities(path), None)
    assert caplog.text.count("no offsets stored") == 1
    assert caplog.text.count("no voxel size stored") == 1
    other = tmp_path / "other.zarr/affinities"
    zarr.create_array(str(other), data=np.full((6, 8, 8, 8), 0.5, np.float32))
    parameters_for(open_affinities(other), None)  # another input: said for it too
    assert caplog.text.count("no offsets stored") == 2


@pytest.mark.parametrize("stored, ndim", [
    ([1, 0, 0, 0, 1, 0, 0, 0, 1, 3, 0, 0, 0, 9, 0, 0, 0, 9], 3),  # one flat list
    ({"z": [1, 0, 0]}, 3),
    ([[0, 1, 0], [0, 0, 1]], 2),  # 3D vectors on 2D affinities, no other metadata
    ([[0, 1], [1, 0]], 3),  # and the other way round
])
def test_an_unreadable_offsets_attribute_gives_way_to_given_offsets(tmp_path, stored, ndim):
    """Offsets given win over a stored attribute that cannot be read or does not fit (it
    was read first: a TypeError, a KeyError, or offsets of another dimension making the
    channels an axis, or an axis a channel); without given ones, one line names the
    attribute."""
    given = OFFSETS_2D if ndim == 2 else OFFSETS_3D
    path = tmp_path / "a.zarr/affinities"
    zarr.create_array(str(path), data=np.full((len(given),) + (16,) * ndim, 0.5, np.float32))
    update_attributes(path, {"offsets": stored})
    opened = open_affinities(path)
    assert opened.shape[1:] == (16,) * ndim  # the first axis is the channels still
    assert parameters_for(opened, {"offsets": given}).offsets == given
    with pytest.raises(InvalidInputError, match=r"offsets attribute.*(is not a list of integer "
                       r"vectors: .*give the offsets instead|are \dD: give \dD offsets)"):
        parameters_for(opened, None)
