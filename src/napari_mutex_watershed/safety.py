"""Never delete or overwrite what is not ours: the rules every writer checks first.

An output may replace only an earlier output of this tool (its attributes carry our
``mutex_watershed_*`` names), and never the input, a folder holding the input, or anything
inside the input, ``--overwrite`` or not.
"""

from __future__ import annotations

import os
from pathlib import Path

from .attributes import EXPORT_ATTR, OUR_ATTRIBUTE_PREFIX, SAMPLE_ATTR
from .errors import UnsafeOutputError
from .storage.levels import METADATA_FILES
from .storage.paths import (
    LABELS_GROUP,
    PARTIAL_SUFFIX,
    is_image,
    is_labels,
    level_paths,
    named_like,
    zarr_node,
)

#: What this tool wrote but a user keeps: sample data (its ground truth) and layers exported
#: from napari (labels proofread by hand). A run never replaces them; only what wrote them.
KEPT_MARKS = {SAMPLE_ATTR: "sample data: only `napari-mutex-watershed sample --overwrite` "
                           "replaces it",
              EXPORT_ATTR: "a layer exported from napari (labels that may have been edited by "
                           "hand): only another export of a layer replaces it"}


def _carries_our_names(attributes: dict, mark: str | None) -> bool:
    if mark is not None:
        return mark in attributes
    return (any(str(k).startswith(OUR_ATTRIBUTE_PREFIX) for k in attributes)
            and not any(kept in attributes for kept in KEPT_MARKS))


def is_ours(path: str | Path, mark: str | None = None) -> bool:
    """Was ``path`` written by this tool's runs (``mark``: by what writes that attribute, a
    sample), and does it hold nothing else? An array with our attributes, or OME-Zarr labels
    (a group with multiscales) whose attributes or first level's carry our names and whose
    folders are all its levels, its files its metadata. A group holding more (an array or a
    file put beside our levels, a group of several outputs) is not ours to replace. Read
    from the zarr attributes; anything unreadable is not ours."""
    path = Path(path)
    kind, attributes = zarr_node(path)  # {} if not a zarr node, or a broken one
    if kind == "array":
        return _carries_our_names(attributes, mark)
    levels = level_paths(attributes) if kind == "group" else []
    if not levels or foreign_entry(path, levels) is not None:
        return False
    return _labels_carry_our_names(path, attributes, levels, mark)


def _labels_carry_our_names(path: Path, attributes: dict, levels: list[str],
                            mark: str | None) -> bool:
    """Do OME-Zarr labels' attributes, or their first level's, carry our names?"""
    return (_carries_our_names(attributes, mark)
            or _carries_our_names(zarr_node(path / levels[0])[1], mark))


#: Files a system or a zarr tool leaves in any folder (Finder's, Windows', consolidated
#: metadata): they do not make an output another's.
CLUTTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", ".zmetadata"})


def foreign_entry(path: Path, levels: list[str]) -> str | None:
    """The name of the first entry of a labels group that is none of its levels, its
    metadata, a write under way or a system's clutter (a file put beside the levels)."""
    for entry in sorted(path.iterdir()):
        name = entry.name
        if name in (levels if entry.is_dir() else METADATA_FILES | CLUTTER) or name.endswith(
                PARTIAL_SUFFIX) or (name.startswith("._") and not entry.is_dir()
                                    and (path / name[2:]).exists()):  # (macOS's, of a file)
            continue
        return name
    return None


def is_empty_folder(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def check_output_location(output: str | Path, protected: dict[str, str | Path],
                          only_ours: bool = True) -> None:
    """Refuse an output that is, holds or lies in one of the ``protected`` paths (by role,
    e.g. ``{"input": ...}``), or (``only_ours``) that exists and is not an earlier output of
    a run of ours (``is_ours``)."""
    target = Path(output).resolve()
    for role, path in protected.items():
        kept = Path(path).resolve()
        if target == kept:
            raise UnsafeOutputError(f"the output {output} is the {role}: choose another output")
        if target.is_relative_to(kept):
            raise UnsafeOutputError(
                f"the output {output} lies inside the {role} {path}: choose another output")
        if kept.is_relative_to(target):
            raise UnsafeOutputError(
                f"the output {output} contains the {role} {path}, which replacing it would "
                "delete: choose another output")
    if only_ours and target.exists() and not is_empty_folder(target) and not is_ours(target):
        attributes = zarr_node(target)[1]
        kept = next((what for key, what in KEPT_MARKS.items() if key in attributes), None)
        if kept is not None:
            raise UnsafeOutputError(f"{output} is {kept}; choose another output")
        levels = level_paths(attributes)
        beside = foreign_entry(target, levels) if levels and target.is_dir() else None
        if beside is not None and _labels_carry_our_names(target, attributes, levels, None):
            # (ours but for what is beside)
            raise UnsafeOutputError(
                f"{output} holds {beside} beside its levels, so it is never replaced: move "
                "it elsewhere, or choose another output")
        raise UnsafeOutputError(
            f"{output} exists and is not an output of napari-mutex-watershed (or holds other "
            "files beside one), so it is never replaced: choose another output")


def check_output_place(output: str | Path) -> None:
    """Refuse a place where labels written would break an OME-Zarr image or an earlier
    output, whatever is there now: an image itself (never ours to replace: its labels go in
    its labels group), a level of an image (``out.zarr/labels/0``), the labels group of an
    image itself (``image.zarr/labels``, which lists its labels), or anywhere inside a
    labels image (an earlier output, ``seg/inner``)."""
    target = Path(os.path.normpath(output))  # (image.zarr/x/../labels is the labels group)
    if is_image(target) and not is_ours(target):
        raise UnsafeOutputError(
            f"the output {output} is an OME-Zarr image, which is never replaced: write its "
            f"labels into its labels group ({output}/{LABELS_GROUP}/<name>)")
    for parent in target.parents:  # each read once, from the output's own group up
        kind, attributes = zarr_node(parent)
        levels = level_paths(attributes) if kind == "group" else []
        if parent == target.parent and target.name in levels:
            advice = (f"write into its labels group ({parent}/{LABELS_GROUP}/<name>)"
                      if not (is_labels(attributes) or is_ours(parent))
                      else f"name the labels image itself ({parent}), or another output")
            raise UnsafeOutputError(
                f"the output {output} is a level of the OME-Zarr image {parent}: {advice}")
        if parent == target.parent and levels and target.name == LABELS_GROUP:
            raise UnsafeOutputError(
                f"the output {output} is the labels group of the OME-Zarr image {parent}, "
                f"which lists the image's labels: write into it ({output}/<name>)")
        if levels and (is_labels(attributes) or is_ours(parent)):
            raise UnsafeOutputError(
                f"the output {output} lies inside the labels image {parent}, which it would "
                "break: choose a place outside it")
        if named_like(parent.name):
            return  # the container's root: nothing above belongs to it
