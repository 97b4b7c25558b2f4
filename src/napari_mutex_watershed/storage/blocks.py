"""Block reads for the blockwise workers: any input format, numpy-style voxel indexing.

Kept light (no funlib, no dask) because every worker process imports it at start.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from .paths import DEFAULT_INPUT, container_kind, read_json, split_path


class TensorStoreArray:
    """An N5 dataset read through tensorstore, in numpy (C) axis order: N5 lists dimensions
    fastest first, so tensorstore's domain is reversed. Pickles as its path."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._store = None
        store = self._open()
        self.shape = tuple(int(s) for s in store.shape)
        self.dtype = np.dtype(store.dtype.numpy_dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(int(c) for c in store.chunk_layout.read_chunk.shape)

    def _open(self):
        if self._store is None:
            import tensorstore as ts

            # only the layout keys: tensorstore refuses attributes such as a "resolution"
            # without the channel axis, which DaCapo/funlib N5 datasets have
            attrs = read_json(Path(self.path) / "attributes.json")
            metadata = {key: attrs[key] for key in ("dimensions", "blockSize", "dataType")
                        if key in attrs}
            metadata["compression"] = attrs.get("compression") or {
                "type": attrs.get("compressionType", "raw")}
            spec = {"driver": "n5", "kvstore": {"driver": "file", "path": self.path},
                    "metadata": metadata}
            self._store = ts.open(spec, read=True, assume_metadata=True).result().T
        return self._store

    def __getitem__(self, index) -> np.ndarray:
        return np.asarray(self._open()[index].read().result())

    def __array__(self, dtype=None, copy=None):
        values = self[...]
        return values.astype(dtype) if dtype is not None else values

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])


def hdf5_datasets(handle) -> dict[str, int]:
    """Every dataset of an open HDF5 file, by path, with its number of axes."""
    import h5py

    found = {}

    def note(name, node) -> None:  # (h5py stops at the first visit that returns something)
        if isinstance(node, h5py.Dataset):
            found[name] = node.ndim

    handle.visititems(note)
    return found


def hdf5_dataset(container: Path, dataset: str):
    import h5py

    handle = h5py.File(container, "r")
    if dataset not in handle or not isinstance(handle[dataset], h5py.Dataset):
        names = list(hdf5_datasets(handle))
        handle.close()
        raise InvalidInputError(
            f"{container} has no dataset {dataset!r}; its datasets: {', '.join(names) or 'none'}"
        )
    return handle[dataset]


def open_block_source(path: str | Path, threads: int = 1):
    """The array a blockwise worker reads blocks from: numpy-style indexing in voxels, channel
    axis first. zarr arrays on local disk are read through their chunk files
    (``chunk_files``), in ``threads`` threads."""
    path = Path(path)
    container, dataset = split_path(path, DEFAULT_INPUT)
    kind = container_kind(container)
    if kind == "hdf5":
        return hdf5_dataset(container, dataset)
    if kind == "n5":
        return TensorStoreArray(path)
    from .chunk_files import open_chunk_files

    return open_chunk_files(path, "r", threads)
