"""Block reads through chunk files equal zarr's own, for every layout they take, and hand
every other layout and index to zarr."""

import json
import shutil

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, TransposeCodec, ZstdCodec

from napari_mutex_watershed.blockwise.task import read_region
from napari_mutex_watershed.errors import InvalidInputError
from napari_mutex_watershed.storage import open_block_source, write_affinities
from napari_mutex_watershed.storage.chunk_files import ChunkFiles, open_local_array
from napari_mutex_watershed.storage.paths import update_attributes

SHAPE, CHUNKS = (3, 21, 34, 40), (3, 8, 16, 16)
REGIONS = [
    (slice(None), slice(3, 19), slice(5, 34), slice(0, 17)),  # across chunks, to the edge
    (slice(None), slice(8, 16), slice(16, 32), slice(16, 32)),  # one whole chunk
    (slice(None), slice(20, 21), slice(33, 34), slice(39, 40)),  # the last voxel
    (slice(1, 2), slice(-5, None), slice(None, 7), slice(30, 99)),  # negative, open, past the end
    (slice(None), slice(4, 4), slice(None), slice(None)),  # empty
    (Ellipsis,),
    (slice(0, 2), Ellipsis, slice(1, 9)),
    (slice(None), slice(2, 6)),  # fewer axes than the array
]
LAYOUTS = {
    "v3 zstd": dict(zarr_format=3, compressors=ZstdCodec(level=1)),
    "v3 blosc": dict(zarr_format=3, compressors=BloscCodec(cname="lz4")),
    "v3 gzip": dict(zarr_format=3, compressors=GzipCodec()),
    "v3 raw": dict(zarr_format=3, compressors=None),
    "v2 blosc": dict(zarr_format=2, compressors=numcodecs.Blosc()),
    "v2 zstd /": dict(zarr_format=2, compressors=numcodecs.Zstd(), chunk_key_encoding={
        "name": "v2", "separator": "/"}),
    "v2 raw": dict(zarr_format=2, compressors=None),
}


def values(dtype) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 250, SHAPE).astype(dtype)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("dtype", ["uint8", "float32", "uint64"])
def test_reads_what_zarr_reads(tmp_path, layout, dtype):
    array = zarr.create_array(tmp_path / "a.zarr", shape=SHAPE, chunks=CHUNKS, dtype=dtype,
                              **LAYOUTS[layout])
    array[...] = values(dtype)
    files = ChunkFiles.of(zarr.open_array(tmp_path / "a.zarr", mode="r"))
    assert isinstance(files, ChunkFiles)
    assert (files.shape, files.dtype, files.chunks) == (SHAPE, np.dtype(dtype), CHUNKS)
    for region in REGIONS:
        read = files[region]
        np.testing.assert_array_equal(read, array[region])
        assert read.dtype == np.dtype(dtype) and read.flags.writeable
    np.testing.assert_array_equal(np.asarray(files), array[...])


def test_reads_in_threads_what_zarr_reads(tmp_path):
    array = zarr.create_array(tmp_path / "a.zarr", shape=SHAPE, chunks=CHUNKS, dtype="uint16")
    array[:, :16] = values("uint16")[:, :16]  # and chunks never written
    files = ChunkFiles.of(array, threads=3)
    assert files.threads == 3
    for region in REGIONS:
        np.testing.assert_array_equal(files[region], array[region])


def test_chunks_never_written_read_as_the_fill_value(tmp_path):
    array = zarr.create_array(tmp_path / "a.zarr", shape=SHAPE, chunks=CHUNKS, dtype="float32",
                              fill_value=0.25)
    array[:, :8, :16, :16] = 3.0  # one chunk of many
    files = ChunkFiles.of(array)
    region = REGIONS[0]
    np.testing.assert_array_equal(files[region], array[region])
    assert files[:, 9:12, 0:4, 0:4].min() == 0.25


def test_a_null_fill_value_reads_as_zarr_reads_it(tmp_path):
    """zarr v2 allows ``"fill_value": null``; zarr reads the chunks never written as 0."""
    array = zarr.create_array(tmp_path / "a.zarr", shape=SHAPE, chunks=CHUNKS, dtype="float32",
                              zarr_format=2)
    array[:, :8] = 5.0
    metadata = json.loads((tmp_path / "a.zarr/.zarray").read_text())
    (tmp_path / "a.zarr/.zarray").write_text(json.dumps({**metadata, "fill_value": None}))
    array = zarr.open_array(tmp_path / "a.zarr", mode="r")
    assert array.fill_value is None
    np.testing.assert_array_equal(ChunkFiles.of(array)[REGIONS[0]], array[REGIONS[0]])


@pytest.mark.parametrize("layout", [
    dict(zarr_format=3, shards=(3, 16, 32, 32)),
    dict(zarr_format=3, serializer=BytesCodec(endian="big"), compressors=None),
    dict(zarr_format=3, filters=[TransposeCodec(order=(0, 1, 3, 2))]),
    dict(zarr_format=2, filters=[numcodecs.Delta(dtype="uint16")]),
    dict(zarr_format=2, order="F"),
], ids=["sharded", "big-endian", "transposed", "v2 filter", "v2 F order"])
def test_other_layouts_are_read_by_zarr(tmp_path, layout):
    array = zarr.create_array(tmp_path / "a.zarr", shape=SHAPE, chunks=CHUNKS, dtype="uint16",
                              **layout)
    array[...] = values("uint16")
    assert ChunkFiles.of(array) is array
    np.testing.assert_array_equal(open_block_source(tmp_path / "a.zarr")[REGIONS[0]],
                                  array[REGIONS[0]])


def test_arrays_off_disk_are_read_by_zarr():
    array = zarr.create_array(zarr.storage.MemoryStore(), shape=SHAPE, chunks=CHUNKS,
                              dtype="uint8")
    assert ChunkFiles.of(array) is array


def test_other_indexes_go_to_zarr(tmp_path):
    array = zarr.create_array(tmp_path / "a.zarr", shape=SHAPE, chunks=CHUNKS, dtype="uint8")
    array[...] = values("uint8")
    files = ChunkFiles.of(array)
    for index in [1, (0, 5), (slice(None), slice(0, 20, 3)), (Ellipsis, 2)]:
        np.testing.assert_array_equal(files[index], array[index])


def test_an_array_opened_read_only_stays_read_only(tmp_path):
    zarr.create_array(tmp_path / "a.zarr", shape=SHAPE, chunks=CHUNKS, dtype="uint8")
    files = ChunkFiles.of(zarr.open_array(tmp_path / "a.zarr", mode="r"))
    assert not files.writes
    with pytest.raises(ValueError):  # zarr's refusal
        files[...] = values("uint8")
    assert not list((tmp_path / "a.zarr").rglob("c/*"))


def test_workers_read_affinities_through_chunk_files(tmp_path):
    path = write_affinities(tmp_path / "in.zarr/affinities", values("uint8"),
                            [(1, 0, 0), (0, 1, 0), (0, 0, 1)])
    assert isinstance(open_block_source(path), ChunkFiles)


def test_a_damaged_chunk_is_an_error_not_a_fill(tmp_path):
    array = zarr.create_array(tmp_path / "a.zarr", shape=SHAPE, chunks=CHUNKS, dtype="uint8")
    array[...] = values("uint8")
    (tmp_path / "a.zarr/c/0/1/1/1").write_bytes(b"not zstd")
    files = ChunkFiles.of(array)
    files[:, :8]  # chunks before the damaged one
    with pytest.raises(Exception):
        files[:, 8:16, 16:32, 16:32]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_an_array_deleted_while_open_is_an_error_not_a_fill(tmp_path, zarr_format):
    """A worker holds its input open for many blocks: once the array is gone, its chunks
    are not "never written" (a run segmented zeros and called itself complete)."""
    array = zarr.create_array(tmp_path / "a.zarr", shape=SHAPE, chunks=CHUNKS, dtype="uint8",
                              zarr_format=zarr_format)
    array[...] = values("uint8")
    files = ChunkFiles.of(array)
    np.testing.assert_array_equal(files[:, :8], values("uint8")[:, :8])
    shutil.rmtree(tmp_path / "a.zarr")
    for read in (lambda: files[:, 8:16], lambda: read_region(files, (slice(None),) * 4, "a")):
        with pytest.raises(InvalidInputError, match=r"a.zarr is gone: it was deleted or moved"):
            read()


def test_a_block_read_of_any_layout_notices_its_array_is_gone(tmp_path):
    """Layouts read by zarr itself (sharded here; N5 by tensorstore likewise) return fill
    values for an array deleted meanwhile: a block's read checks the array is still there."""
    array = zarr.create_array(tmp_path / "s.zarr", shape=SHAPE, chunks=CHUNKS,
                              shards=tuple(2 * c for c in CHUNKS), dtype="uint8")
    array[...] = values("uint8")
    source = ChunkFiles.of(array)
    assert source is array  # not through chunk files
    region = (slice(None),) * 4
    np.testing.assert_array_equal(read_region(source, region, str(tmp_path / "s.zarr")),
                                  values("uint8"))
    shutil.rmtree(tmp_path / "s.zarr")
    with pytest.raises(InvalidInputError, match=r"s.zarr is gone: it was deleted or moved"):
        read_region(source, region, str(tmp_path / "s.zarr"))


WRITABLE = ["v3 zstd", "v3 gzip", "v3 raw", "v2 blosc", "v2 zstd /", "v2 raw"]


@pytest.mark.parametrize("layout", WRITABLE)
def test_writes_what_zarr_writes(tmp_path, layout):
    """Whole chunks, and chunks cut by the far edge, give the files zarr gives (gzip's the same
    once decoded); a chunk of only the fill value leaves no file, as zarr leaves none."""
    ours = zarr.create_array(tmp_path / "ours.zarr", shape=SHAPE, chunks=CHUNKS,
                             dtype="uint32", fill_value=7, **LAYOUTS[layout])
    theirs = zarr.create_array(tmp_path / "theirs.zarr", shape=SHAPE, chunks=CHUNKS,
                               dtype="uint32", fill_value=7, **LAYOUTS[layout])
    files = ChunkFiles.of(ours)
    assert files.writes
    data = values("uint32")
    data[:, :8, :16, :16] = 7  # one chunk of only the fill value
    theirs[...] = 1
    files[...] = 1
    for region in [(slice(None), slice(0, 16), slice(16, 34), slice(0, 32)),  # to the edge
                   (slice(None), slice(16, 21), slice(0, 16), slice(32, 40)),  # the corner
                   (slice(None), slice(0, 8), slice(0, 16), slice(0, 16))]:  # fill only
        files[region] = data[region]
        theirs[region] = data[region]
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "ours.zarr")[...], theirs[...])
    listing = {p.relative_to(tmp_path / "ours.zarr") for p in (tmp_path / "ours.zarr").rglob("*")}
    assert listing == {p.relative_to(tmp_path / "theirs.zarr")
                       for p in (tmp_path / "theirs.zarr").rglob("*")}
    assert not any(p.name.endswith(".partial") for p in listing)
    for path in (tmp_path / "theirs.zarr").rglob("*"):
        if path.is_file() and not path.name.startswith((".z", "zarr.json")):
            written = [(tmp_path / "ours.zarr" / path.relative_to(tmp_path / "theirs.zarr")
                        ).read_bytes(), path.read_bytes()]
            if "gzip" in layout:  # a gzip header holds the second it was written
                written = [bytes(files.codec.decode(data)) for data in written]
            assert written[0] == written[1], path


def test_writes_zarr_must_make_go_to_zarr(tmp_path):
    """Part of a chunk, a scalar, and a layout whose settings it cannot write (Blosc v3)."""
    for layout in ("v3 zstd", "v3 blosc"):
        array = zarr.create_array(tmp_path / f"{layout}.zarr", shape=SHAPE, chunks=CHUNKS,
                                  dtype="uint16", **LAYOUTS[layout])
        files = ChunkFiles.of(array)
        assert files.writes == (layout != "v3 blosc")
        expected = values("uint16")
        files[...] = expected
        part = (slice(None), slice(3, 5), slice(1, 30), slice(2, 3))
        expected[part] = np.arange(expected[part].size).reshape(expected[part].shape)
        files[part] = expected[part]
        files[:, 20:] = 4
        expected[:, 20:] = 4
        np.testing.assert_array_equal(array[...], expected)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_opens_what_zarr_opens_without_its_event_loop(tmp_path, layout, zarr_round_trips):
    """``open_local_array`` reads the metadata itself; the array is zarr's, as zarr opens it."""
    array = zarr.create_array(tmp_path / "a.zarr", shape=SHAPE, chunks=CHUNKS, dtype="uint16",
                              attributes={"offsets": [[1, 0, 0]]}, **LAYOUTS[layout])
    array[...] = values("uint16")
    zarr_round_trips.clear()
    opened = open_local_array(tmp_path / "a.zarr")
    assert not zarr_round_trips
    assert opened.metadata == zarr.open_array(tmp_path / "a.zarr", mode="r").metadata
    assert opened.attrs["offsets"] == [[1, 0, 0]] and opened.read_only
    np.testing.assert_array_equal(opened[...], values("uint16"))
    with pytest.raises(Exception):
        opened[0, 0, 0, 0] = 7
    writable = open_local_array(tmp_path / "a.zarr", "r+")
    writable[0, 0, 0, 0] = 7
    assert zarr.open_array(tmp_path / "a.zarr", mode="r")[0, 0, 0, 0] == 7


def test_what_it_cannot_open_zarr_opens_or_refuses(tmp_path):
    zarr.create_group(tmp_path / "g.zarr")
    for path in (tmp_path / "g.zarr", tmp_path / "absent.zarr"):
        with pytest.raises(Exception) as ours:
            open_local_array(path)
        with pytest.raises(Exception) as zarrs:
            zarr.open_array(path, mode="r")
        assert type(ours.value) is type(zarrs.value)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_an_array_is_parsed_once_until_its_metadata_changes(tmp_path, zarr_format, monkeypatch):
    """A small run opens its input twice: zarr's parse of the metadata (0.1 to 0.9 ms) is
    kept by the bytes of its files, so any rewrite, even in place at the same size within
    the file system's clock tick, is parsed again."""
    import zarr.core.array

    parsed = []
    parse = zarr.core.array.parse_array_metadata
    monkeypatch.setattr(zarr.core.array, "parse_array_metadata", lambda metadata: (
        isinstance(metadata, dict) and parsed.append(1)) or parse(metadata))
    path = tmp_path / "a.zarr"

    def attribute(opens: int = 1) -> int:
        """The attribute as opened ``opens`` times; how often it was parsed, in ``parsed``."""
        parsed.clear()
        values = {open_local_array(path).attrs["n"] for _ in range(opens)}
        assert len(values) == 1
        return values.pop()

    zarr.create_array(path, shape=(4, 4), chunks=(2, 2), dtype="uint8",
                      zarr_format=zarr_format, attributes={"n": 1})
    assert attribute(3) == 1 and len(parsed) == 1
    assert attribute(3) == 1 and not parsed
    update_attributes(path, {"n": 2})  # ours: the file replaced
    assert attribute() == 2 and len(parsed) == 1
    zarr.open_array(path, mode="r+").attrs["n"] = 3  # zarr's
    assert attribute() == 3 and len(parsed) == 1
    attributes = path / ("zarr.json" if zarr_format == 3 else ".zattrs")
    with open(attributes, "r+b") as handle:  # in place, same size, same time
        data = handle.read()
        handle.seek(0)
        handle.write(data.replace(b'"n": 3', b'"n": 4').replace(b'"n":3', b'"n":4'))
    assert attribute() == 4 and len(parsed) == 1
    zarr.create_array(path, shape=(6, 6), chunks=(3, 3), dtype="uint8",
                      zarr_format=zarr_format, overwrite=True, attributes={"n": 5})
    assert attribute() == 5 and open_local_array(path).shape == (6, 6)


def test_arrays_opened_from_kept_metadata_have_their_own_attributes(tmp_path):
    """zarr updates an array's attributes in place before it writes them: neither another
    array nor the kept metadata may see an update, least of all one that failed."""
    path = tmp_path / "a.zarr"
    zarr.create_array(path, shape=(4,), dtype="uint8", attributes={"n": 1})
    writable, read_only = open_local_array(path, "r+"), open_local_array(path)
    with pytest.raises(Exception):
        read_only.attrs["n"] = 7
    assert open_local_array(path).attrs["n"] == 1 and writable.attrs["n"] == 1
    writable.attrs["n"] = 2
    assert open_local_array(path).attrs["n"] == 2
    assert zarr.open_array(path, mode="r").attrs["n"] == 2


def test_arrays_are_opened_from_many_threads_at_once(tmp_path, monkeypatch):
    """The kept metadata is shared by a process's threads (a napari session's): opening more
    arrays than it keeps from several threads at once, with the interpreter switching
    threads as often as it can, neither fails nor mixes arrays up."""
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from napari_mutex_watershed.storage import chunk_files

    monkeypatch.setattr(chunk_files, "PARSED_KEPT", 4)
    paths = [tmp_path / f"a{i}.zarr" for i in range(12)]
    for i, path in enumerate(paths):
        zarr.create_array(path, shape=(i + 1,), dtype="uint8", attributes={"i": i})
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(8) as pool:
            opened = list(pool.map(lambda k: open_local_array(paths[k % 12]), range(3000)))
    finally:
        sys.setswitchinterval(switching)
    assert all(a.attrs["i"] == k % 12 and a.shape == (k % 12 + 1,)
               for k, a in enumerate(opened))
