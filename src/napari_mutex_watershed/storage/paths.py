"""Where an array lives: a container (zarr store, N5 store, HDF5 file) and a dataset in it.

Paths name an array inside a container, ``volume.zarr/affinities``, ``volume.n5/affs`` or
``volume.h5/affs``. A bare container path (``volume.zarr``) means the container itself when
it is an array or an OME-Zarr image, else its ``affinities`` array for input and ``labels``
for output.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

from ..errors import InvalidInputError

ZARR_SUFFIXES = (".zarr",)
N5_SUFFIXES = (".n5",)
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
CONTAINER_SUFFIXES = ZARR_SUFFIXES + N5_SUFFIXES + HDF5_SUFFIXES
DEFAULT_INPUT = "affinities"
DEFAULT_OUTPUT = "labels"
#: The group of an OME-Zarr image that lists its labels images (``image.zarr/labels/<name>``).
LABELS_GROUP = "labels"
#: The one line an unknown layout gets: everything the readers accept.
ACCEPTED = (
    "accepted: zarr v2/v3 arrays (funlib, DaCapo resolution/offset or no metadata), "
    "OME-Zarr 0.4/0.5 images (group or level), N5 datasets (.n5) and HDF5 datasets "
    "(file.h5/dataset)"
)


def named_like(name: str, suffixes: tuple[str, ...] = CONTAINER_SUFFIXES) -> bool:
    """Does a file or folder name end in one of ``suffixes``, in any case (``AFFS.H5``)?"""
    return name.lower().endswith(suffixes)


def split_path(path: str | Path, default_dataset: str) -> tuple[Path, str]:
    """(container, dataset) of an array path such as ``a.zarr/seg/labels``; the dataset is
    empty when the container itself is the array (a zarr array at the root of its store)."""
    parts = Path(path).parts
    for i, part in enumerate(parts):
        if named_like(part):
            container = Path(*parts[: i + 1])
            dataset = "/".join(parts[i + 1:])
            if not dataset and not _is_zarr_node(container, "array", "ome"):
                dataset = default_dataset
            return container, dataset
    raise InvalidInputError(
        f"{path} is not inside a .zarr or .n5 container or an HDF5 file (.h5, .hdf5); "
        + ACCEPTED
    )


def check_still_there(path: str | Path) -> None:
    """Refuse to go on reading an array that was deleted or moved (an HDF5 dataset: its
    file): zarr and N5 readers take its missing chunks for never written, fill values."""
    container, dataset = split_path(path, DEFAULT_INPUT)
    there = (container.is_file() if container_kind(container) == "hdf5"
             else (container / dataset if dataset else container).exists())
    if not there:
        raise gone(path)


def gone(path: str | Path) -> InvalidInputError:
    return InvalidInputError(f"{path} is gone: it was deleted or moved while it was read")


def array_path(path: str | Path, default_dataset: str) -> Path:
    container, dataset = split_path(path, default_dataset)
    return container / dataset if dataset else container


def container_kind(container: Path) -> str:
    """"zarr", "n5" or "hdf5", from the container's suffix."""
    name = container.name
    if named_like(name, HDF5_SUFFIXES):
        return "hdf5"
    if named_like(name, N5_SUFFIXES):
        return "n5"
    return "zarr"


def read_json(path: Path) -> dict:
    return json_object(read_bytes(path))


def read_bytes(path: Path) -> bytes | None:
    """The file's bytes; None when it cannot be read (missing, a folder, no permission)."""
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def json_object(data: bytes | None) -> dict:
    """The JSON object in ``data``; {} for anything else (None, invalid, not an object)."""
    try:
        value = json.loads(data) if data is not None else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def zarr_node(path: Path) -> tuple[str | None, dict]:
    """(node type, attributes) of a zarr v2 or v3 node without opening it: "array", "group"
    or None; what tells the layouts apart is cheap to read."""
    path = Path(path)
    v3 = read_json(path / "zarr.json")
    if v3:
        return v3.get("node_type"), v3.get("attributes") or {}
    attrs = read_json(path / ".zattrs")
    if (path / ".zarray").exists():
        return "array", attrs
    if (path / ".zgroup").exists():
        return "group", attrs
    return None, {}


def update_attributes(path: Path, updates: dict) -> None:
    """Merge ``updates`` into the attributes of the zarr v2 or v3 node at ``path`` by one
    read and one write of its JSON, where zarr 3 takes a round trip through its event loop
    for the open and one per key (about 1 ms apiece, most of a small run's bookkeeping)."""
    path = Path(path)
    if (path / "zarr.json").exists():
        metadata = json.loads((path / "zarr.json").read_text())
        metadata["attributes"] = {**(metadata.get("attributes") or {}), **updates}
        replace_json(path / "zarr.json", metadata)
    elif (path / ".zarray").exists() or (path / ".zgroup").exists():
        replace_json(path / ".zattrs", {**read_json(path / ".zattrs"), **updates})
    else:
        raise FileNotFoundError(f"{path} is no zarr array or group")


def write_group(path: Path, zarr_format: int, attributes: dict | None = None) -> None:
    """A new zarr group at ``path``, its metadata written here (as ``update_attributes``)."""
    path.mkdir(parents=True, exist_ok=True)
    if zarr_format == 3:
        replace_json(path / "zarr.json", {"zarr_format": 3, "node_type": "group",
                                          "attributes": attributes or {}})
        return
    if attributes:
        replace_json(path / ".zattrs", attributes)
    replace_json(path / ".zgroup", {"zarr_format": 2})


def replace_json(path: Path, value: dict) -> None:
    """One line of JSON: indented, Python encodes it itself at ten times the cost."""
    replace_file(path, json.dumps(value).encode())


#: The suffix of a file being written, renamed over its target when complete.
PARTIAL_SUFFIX = ".partial"


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, replacing the file at once: a reader sees the old file or
    the new, never half of one (a chunk, a node's metadata)."""
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}")
    try:
        partial.write_bytes(data)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def multiscales(attrs: dict) -> list | None:
    """OME-Zarr multiscales of a group's attributes: 0.5 keeps them under "ome"."""
    return attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")



def level_paths(attrs: dict) -> list[str]:
    """The paths of the levels of the OME-Zarr image whose group has ``attrs``, level 0
    first; [] for anything else."""
    pyramid = multiscales(attrs) or [{}]
    return [str(d.get("path")) for d in pyramid[0].get("datasets", [])]


def is_labels(attrs: dict) -> bool:
    """Do a group's attributes make it OME-Zarr labels (``image-label``, 0.4 or 0.5)?"""
    return "image-label" in {**attrs, **(attrs.get("ome") or {})}


def is_image(location: Path) -> bool:
    """Is ``location`` an OME-Zarr image other than labels: one whose labels go in its
    ``labels`` group?"""
    kind, attrs = zarr_node(location)
    return kind == "group" and bool(multiscales(attrs)) and not is_labels(attrs)


def labels_place(source: str | Path, name: str) -> Path:
    """Where labels made from the array at ``source`` go by default: in its OME-Zarr image's
    labels group when it is a level of one (OME viewers then list them with the image),
    else at the root of its container."""
    source = Path(source)
    kind, attrs = zarr_node(source.parent)
    if kind == "group" and source.name in level_paths(attrs):
        return source.parent / LABELS_GROUP / name
    return split_path(source, DEFAULT_INPUT)[0] / name


def first_level(location: Path) -> Path:
    """The first (full-resolution) level of the OME-Zarr image at ``location``, or
    ``location`` itself when it is no such image."""
    node, attrs = zarr_node(location)
    if node == "group" and multiscales(attrs):
        return location / multiscales(attrs)[0]["datasets"][0]["path"]
    return location


def stored_voxels(path: str | Path, default_dataset: str) -> int | None:
    """Voxels per channel of the zarr or N5 array, or OME-Zarr image's first level, at
    ``path``, from its JSON metadata alone: how large a run will be, known before numpy and
    zarr are imported (the command). None for HDF5 or metadata not read here."""
    try:
        container, dataset = split_path(path, default_dataset)
    except InvalidInputError:
        return None
    location = container / dataset if dataset else container
    kind = container_kind(container)
    if kind == "n5":  # N5 lists the axes fastest first
        shape = (read_json(location / "attributes.json").get("dimensions") or [])[::-1]
    elif kind == "zarr":
        try:
            location = first_level(location)
        except (IndexError, KeyError, TypeError):  # multiscales not as OME-Zarr has them
            return None
        shape = (read_json(location / "zarr.json") or read_json(location / ".zarray")).get(
            "shape")
    else:
        return None
    if not isinstance(shape, list) or len(shape) < 2 or not all(
            isinstance(s, int) and s >= 0 for s in shape):
        return None
    return math.prod(shape[1:])


def node_kind(path: Path) -> str | None:
    """What a folder of a zarr or N5 container is: "array", "ome" (an OME-Zarr image),
    "group", "n5-array", "n5-group", or None (nothing of these)."""
    if (path / "attributes.json").exists() or named_like(path.name, N5_SUFFIXES):
        return "n5-array" if "dimensions" in read_json(path / "attributes.json") else "n5-group"
    node, attrs = zarr_node(path)
    if node == "group":
        return "ome" if multiscales(attrs) else "group"
    return node


def arrays_in(container: Path, depth: int = 4, limit: int = 12) -> list[str]:
    """Paths, inside a zarr or N5 container, of the arrays and OME-Zarr images it holds (not
    below ``depth`` folders, at most ``limit``): what a path that names none could have meant."""
    found: list[str] = []
    folders = [container]
    for _ in range(depth):
        below = []
        for folder in folders:
            if node_kind(folder) in ("array", "ome", "n5-array"):
                found.append(folder.relative_to(container).as_posix())
                continue
            try:
                below += sorted(p for p in folder.iterdir()
                                if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
        folders = below
    return found[:limit] + (["..."] if len(found) > limit else [])


def _is_zarr_node(path: Path, *kinds: str) -> bool:
    node, attrs = zarr_node(path)
    if node == "group" and multiscales(attrs):
        node = "ome"
    return node in kinds
