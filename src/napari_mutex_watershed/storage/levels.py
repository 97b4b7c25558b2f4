"""The levels of OME-Zarr labels and their complete flag.

Kept light (JSON only): the blockwise job and its workers import it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..attributes import COMPLETE_ATTR
from .paths import (
    DEFAULT_OUTPUT,
    LABELS_GROUP,
    PARTIAL_SUFFIX,
    array_path,
    first_level,
    multiscales,
    update_attributes,
    zarr_node,
)


def labels_levels(location: str | Path) -> list[tuple[Path, tuple[int, ...]]]:
    """(path, factor relative to level 0) of every level of OME-Zarr labels at ``location``,
    from its multiscales scales."""
    location = Path(location)
    _, attrs = zarr_node(location)
    datasets = multiscales(attrs)[0]["datasets"]
    scales = [next(t["scale"] for t in d["coordinateTransformations"] if t["type"] == "scale")
              for d in datasets]
    return [(location / d["path"], tuple(int(round(s / b)) for s, b in zip(scale, scales[0])))
            for d, scale in zip(datasets, scales)]


def labels_level0(path: str | Path) -> Path:
    """The level-0 array of OME-Zarr labels (or the array itself)."""
    return first_level(array_path(path, DEFAULT_OUTPUT))


def is_marked_complete(level0: str | Path) -> bool:
    """Whether a run set the complete flag on this level 0."""
    return bool(zarr_node(Path(level0))[1].get(COMPLETE_ATTR))


#: The files of an array's folder that are its metadata, not its chunks (zarr v3 and v2).
METADATA_FILES = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup"})


def holds_chunks(location: str | Path) -> bool:
    """Is any chunk written in the array or group at ``location``: a file that is neither
    metadata nor the partial file of a write under way? Stops at the first it finds."""
    for _, _, files in os.walk(location):
        if any(name not in METADATA_FILES and not name.endswith(PARTIAL_SUFFIX) for name in files):
            return True
    return False


def mark_complete(level0: str | Path) -> None:
    """Set the complete flag on level 0 (the job checks it) and on its labels group, and
    list the labels in their image's labels group: OME viewers show only finished ones (a
    run refused for its input left an empty label listed with the image)."""
    level0 = Path(level0)
    update_attributes(level0, {COMPLETE_ATTR: True})
    node, attrs = zarr_node(level0.parent)
    if node == "group" and multiscales(attrs):
        update_attributes(level0.parent, {COMPLETE_ATTR: True})
        list_label(level0.parent, True)


def list_label(location: Path, listed: bool) -> None:
    """List (or no longer list) the labels image at ``location`` in its image's labels group
    (``image.zarr/labels``, OME-Zarr 0.5 or 0.4), if it is in one: listed once complete,
    unlisted while it is replaced."""
    group, name = Path(location).parent, Path(location).name
    if group.name != LABELS_GROUP:  # (no read for any other output)
        return
    node, attrs = zarr_node(group)
    if node != "group":
        return
    v3 = (group / "zarr.json").exists()
    holder = dict(attrs.get("ome") or {"version": "0.5"}) if v3 else dict(attrs)
    names = set(holder.get("labels", []))
    if (name in names) == listed:
        return
    holder["labels"] = sorted(names | {name} if listed else names - {name})
    update_attributes(group, {"ome": holder} if v3 else {"labels": holder["labels"]})
