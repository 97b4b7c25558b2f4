"""Block reads of a zarr array on local disk: its chunk files decoded with numcodecs.

zarr 3 reads a worker's block (about a hundred 32^3 chunks) at about 2.4 times the CPU that
decoding the same files costs (``benchmarks/bench_block_read.py``), and part of it in
threads that take the core the other worker's kernel needs. Reading the files directly
serves the layouts pipelines write (zarr v2 or v3, regular chunks in C order, one
compressor or none); anything else (sharding, filters, transposes, checksums, another store
or byte order) is read through zarr, as is any index other than plain slices.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np


def _v3_decoder(codecs):
    """numcodecs' decoder of a v3 codec chain ``bytes`` + at most one compressor; False if
    the chain is another one. The frames describe themselves, so the codec's settings do not
    matter for decoding."""
    import numcodecs
    from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec

    decoders = {ZstdCodec: numcodecs.Zstd, BloscCodec: numcodecs.Blosc, GzipCodec: numcodecs.GZip}
    if not codecs or type(codecs[0]) is not BytesCodec:
        return False
    endian = codecs[0].endian
    if endian is not None and getattr(endian, "value", endian) != sys.byteorder:
        return False
    if len(codecs) == 1:
        return None
    if len(codecs) == 2 and type(codecs[1]) in decoders:
        return decoders[type(codecs[1])]()
    return False


def _decoder(array):
    """The array's chunk decoder (None: stored raw), or False when this module cannot read
    it."""
    metadata = array.metadata
    if metadata.zarr_format == 2:
        if metadata.filters or metadata.order != "C" or not array.dtype.isnative:
            return False
        compressor = metadata.compressor
        return compressor if compressor is None or hasattr(compressor, "decode") else False
    if getattr(array, "shards", None) is not None:
        return False
    return _v3_decoder(tuple(metadata.codecs))


class ChunkFiles:
    """A zarr array on local disk, read chunk file by chunk file; indexes like the array."""

    def __init__(self, array, directory: Path, decoder):
        self.array = array
        self.directory = directory
        self.decoder = decoder
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(array.chunks)
        self.fill_value = array.fill_value

    @classmethod
    def of(cls, array):
        """``array`` read through its chunk files, or ``array`` itself when it is not a
        layout this reads."""
        from zarr.storage import LocalStore

        if not isinstance(array.store, LocalStore) or array.dtype.kind not in "biuf":
            return array
        decoder = _decoder(array)
        if decoder is False:
            return array
        return cls(array, Path(array.store.root) / array.path, decoder)

    def __getitem__(self, index) -> np.ndarray:
        region = self._region(index)
        if region is None:
            return np.asarray(self.array[index])
        out = np.empty(tuple(b - a for a, b in region), self.dtype)
        if not out.size:
            return out
        spans = [range(a // c, -(-b // c)) for (a, b), c in zip(region, self.chunks)]
        for grid in itertools.product(*spans):
            origin = [g * c for g, c in zip(grid, self.chunks)]
            inside = tuple(slice(max(a - o, 0), min(b - o, c))
                           for (a, b), o, c in zip(region, origin, self.chunks))
            target = tuple(slice(o + s.start - a, o + s.stop - a)
                           for (a, _), o, s in zip(region, origin, inside))
            chunk = self._chunk(grid)
            out[target] = self.fill_value if chunk is None else chunk[inside]
        return out

    def __array__(self, dtype=None, copy=None):
        values = self[...]
        return values.astype(dtype) if dtype is not None else values

    def _region(self, index) -> list[tuple[int, int]] | None:
        """[start, stop) per axis of an index made of slices of step 1 (and at most one
        Ellipsis); None for any other index."""
        index = index if isinstance(index, tuple) else (index,)
        if any(i is Ellipsis for i in index):
            at = index.index(Ellipsis)
            if Ellipsis in index[at + 1:]:
                return None
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
        was never written."""
        path = self.directory / self.array.metadata.encode_chunk_key(grid)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if self.decoder is not None:
            data = self.decoder.decode(data)
        return np.frombuffer(data, self.dtype).reshape(self.chunks)
