"""Block reads and writes of a zarr array on local disk: its chunk files, through numcodecs.

zarr 3 reads a worker's block (about a hundred 32^3 chunks) at 1.6 to 2 times the CPU that
decoding the same files costs, and writes a block's fragments at 2 to 5 times
(``benchmarks/bench_block_read.py``, docs/storage.md), part of it in threads that take the
core the other worker's kernel needs. The files themselves serve the layouts pipelines and
this package write (zarr v2 or v3, regular chunks in C order, one compressor or none);
anything else (sharding, filters, transposes, another store or byte order; writes of Blosc
v3, of part of a chunk or to an array opened read-only) goes through zarr, as does any index
other than plain slices.
"""

from __future__ import annotations

import copy
import itertools
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .paths import gone, json_object, read_bytes, replace_file


def _v3_codec(codecs):
    """(numcodecs' codec of a v3 chain ``bytes`` + at most one compressor (None: raw), can it
    also write), or None if the chain is another one. A Blosc frame describes itself, so any
    Blosc decodes it, but writing one as zarr would needs its settings: zarr writes those."""
    import numcodecs
    from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec

    if not codecs or type(codecs[0]) is not BytesCodec:
        return None
    endian = codecs[0].endian
    if endian is not None and getattr(endian, "value", endian) != sys.byteorder:
        return None
    if len(codecs) == 1:
        return None, True
    if len(codecs) != 2:
        return None
    codec = codecs[1]
    if type(codec) is ZstdCodec:
        return numcodecs.Zstd(level=codec.level, checksum=codec.checksum), True
    if type(codec) is GzipCodec:
        return numcodecs.GZip(level=codec.level), True
    if type(codec) is BloscCodec:
        return numcodecs.Blosc(), False
    return None


def _codec(array):
    """(the array's chunk codec, None if stored raw; can it write), or None when this module
    cannot read the array."""
    metadata = array.metadata
    if metadata.zarr_format == 2:
        if metadata.filters or metadata.order != "C" or not array.dtype.isnative:
            return None
        compressor = metadata.compressor
        if compressor is not None and not hasattr(compressor, "decode"):
            return None
        return compressor, True
    if getattr(array, "shards", None) is not None:
        return None
    return _v3_codec(tuple(metadata.codecs))


#: Parsed metadata of the local arrays this process opened, by folder, with the bytes of
#: the files it came from: zarr parses an array's JSON in 0.1 to 0.9 ms, and a run of one
#: block opens its input twice.
_PARSED: dict[Path, tuple[tuple, object]] = {}
#: How many arrays ``_PARSED`` keeps.
PARSED_KEPT = 64
_PARSED_LOCK = threading.Lock()


def _parsed_metadata(path: Path):
    """The parsed metadata of the array at ``path``, None if this cannot read it: a v3 group
    or invalid JSON (zarr says why), or no metadata."""
    from zarr.core.array import parse_array_metadata

    files = (read_bytes(path / "zarr.json"),)
    if files[0] is None:  # zarr v2
        files = (None, read_bytes(path / ".zarray"), read_bytes(path / ".zattrs"))
    kept = _PARSED.get(path)
    if kept is not None and kept[0] == files:
        return _with_own_attributes(kept[1])
    if files[0] is not None:
        metadata = json_object(files[0])
        if metadata.get("node_type") != "array":
            return None
    else:
        metadata = json_object(files[1])
        if not metadata:
            return None
        metadata["attributes"] = json_object(files[2])
    try:
        parsed = parse_array_metadata(metadata)
    except Exception:  # metadata zarr would refuse: let it say why
        return None
    with _PARSED_LOCK:  # (threads of a napari session open arrays too)
        if len(_PARSED) >= PARSED_KEPT:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[path] = (files, parsed)
    return _with_own_attributes(parsed)


def _with_own_attributes(metadata):
    """``metadata`` with a copy of its attributes: zarr updates an array's attributes in
    place (before it writes them, which may fail), and that must reach neither the kept
    metadata nor another array opened from it."""
    own = copy.copy(metadata)
    object.__setattr__(own, "attributes", copy.deepcopy(metadata.attributes))  # frozen
    return own


def open_local_array(path, mode: str = "r"):
    """The zarr array at ``path`` (``mode`` "r" or "r+"), from its metadata read here: zarr 3
    reads it through its event loop thread, about 1 ms an open, which a small run pays once
    per array it touches. Whatever this does not read opens through zarr."""
    import zarr
    from zarr.storage import LocalStore, StorePath

    path = Path(path)
    metadata = _parsed_metadata(path)
    if metadata is not None:
        try:
            return zarr.Array.from_dict(StorePath(LocalStore(path, read_only=mode == "r")),
                                        metadata)
        except Exception:  # metadata zarr would refuse: let it say why
            pass
    return zarr.open_array(str(path), mode=mode)


def open_chunk_files(path, mode: str = "r", threads: int = 1):
    """The zarr array at ``path`` through its chunk files where its layout allows
    (``ChunkFiles.of``), else the zarr array itself."""
    return ChunkFiles.of(open_local_array(path, mode), threads)


def chunk_grids(region, chunks):
    """Grid indices, in C order, of the chunks a region ([start, stop) per axis) touches."""
    return itertools.product(*[range(a // c, -(-b // c)) for (a, b), c in zip(region, chunks)])


class ChunkFiles:
    """A zarr array on local disk, read and written chunk file by chunk file; indexes like
    the array."""

    def __init__(self, array, directory: Path, codec, writes: bool, threads: int = 1):
        self.array = array
        self.threads = threads
        self.directory = directory
        self.codec = codec
        self.writes = writes
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(array.chunks)
        # zarr reads a v2 array's null fill value as zeros
        self.fill_value = self.dtype.type(0) if array.fill_value is None else array.fill_value

    @classmethod
    def of(cls, array, threads: int = 1):
        """``array`` through its chunk files, or ``array`` itself when it is not a layout this
        reads. Reads decode in ``threads`` threads (numcodecs lets go of the GIL): more than
        one only where nothing else needs the cores, as a run of one block."""
        from zarr.storage import LocalStore

        if not isinstance(array.store, LocalStore) or array.dtype.kind not in "biuf":
            return array
        codec = _codec(array)
        if codec is None:
            return array
        codec, writes = codec
        return cls(array, Path(array.store.root) / array.path, codec,
                   writes and not array.read_only, threads)

    def __getitem__(self, index) -> np.ndarray:
        region = self._region(index)
        if region is None:
            return np.asarray(self.array[index])
        out = np.empty(tuple(b - a for a, b in region), self.dtype)
        if not out.size:
            return out

        def place(grid) -> None:
            origin = [g * c for g, c in zip(grid, self.chunks)]
            inside = tuple(slice(max(a - o, 0), min(b - o, c))
                           for (a, b), o, c in zip(region, origin, self.chunks))
            target = tuple(slice(o + s.start - a, o + s.stop - a)
                           for (a, _), o, s in zip(region, origin, inside))
            chunk = self._chunk(grid)
            out[target] = self.fill_value if chunk is None else chunk[inside]

        grids = list(chunk_grids(region, self.chunks))
        if self.threads > 1 and len(grids) > 1:  # a thread costs more than a chunk's decode
            with ThreadPoolExecutor(self.threads) as pool:
                list(pool.map(place, grids))
        else:
            for grid in grids:
                place(grid)
        return out

    def __setitem__(self, index, values) -> None:
        """Write whole chunks (those at the far edge may be cut by it) as zarr would: encoded,
        each file replaced at once, a chunk of only the fill value removed. Anything else is
        written by zarr."""
        region = self._region(index)
        values = np.asarray(values)
        if (region is None or not self.writes
                or values.shape != tuple(b - a for a, b in region)
                or any(a % c or (b % c and b != n)
                       for (a, b), c, n in zip(region, self.chunks, self.shape))):
            self.array[index] = values
            return
        for grid in chunk_grids(region, self.chunks):
            part = values[tuple(slice(g * c - a, (g + 1) * c - a)
                                for g, c, (a, _) in zip(grid, self.chunks, region))]
            if part.shape == self.chunks:
                chunk = np.ascontiguousarray(part, self.dtype)
            else:  # cut by the far edge: zarr stores it whole, the rest the fill value
                chunk = np.full(self.chunks, self.fill_value, self.dtype)
                chunk[tuple(slice(0, n) for n in part.shape)] = part
            self._write_chunk(grid, chunk)

    def __array__(self, dtype=None, copy=None):
        values = self[...]
        return values.astype(dtype) if dtype is not None else values

    def _region(self, index) -> list[tuple[int, int]] | None:
        """[start, stop) per axis of an index made of slices of step 1 (and at most one
        Ellipsis); None for any other index."""
        index = index if isinstance(index, tuple) else (index,)
        ellipses = [k for k, i in enumerate(index) if i is Ellipsis]
        if len(ellipses) > 1:
            return None
        if ellipses:
            at = ellipses[0]
            index = index[:at] + (slice(None),) * (self.ndim - len(index) + 1) + index[at + 1:]
        if len(index) > self.ndim or not all(
                isinstance(i, slice) and i.step in (None, 1) for i in index):
            return None
        index = index + (slice(None),) * (self.ndim - len(index))
        region = []
        for i, n in zip(index, self.shape):
            start, stop, _ = i.indices(n)
            region.append((start, max(start, stop)))
        return region

    def _chunk(self, grid) -> np.ndarray | None:
        """The chunk at ``grid`` (full chunk shape, as zarr stores edge chunks), None if it
        was never written; an array deleted while it is read is an error, not fill values
        (a run would segment zeros and call it complete)."""
        try:
            data = self._path(grid).read_bytes()
        except FileNotFoundError:
            metadata = "zarr.json" if self.array.metadata.zarr_format == 3 else ".zarray"
            if not (self.directory / metadata).exists():
                raise gone(self.directory) from None
            return None
        if self.codec is not None:
            data = self.codec.decode(data)
        return np.frombuffer(data, self.dtype).reshape(self.chunks)

    def _path(self, grid) -> Path:
        return self.directory / self.array.metadata.encode_chunk_key(grid)

    def _write_chunk(self, grid, chunk: np.ndarray) -> None:
        path = self._path(grid)
        if (chunk == self.fill_value).all():  # zarr keeps no such chunk
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, chunk.tobytes() if self.codec is None else self.codec.encode(chunk))
