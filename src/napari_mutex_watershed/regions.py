"""Regions of a volume in voxels, as callers give them: checked once, for every front."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InvalidInputError


def voxels(name: str, values, ndim: int, minimum: int) -> tuple[int, ...]:
    """A per-axis integer tuple from the caller (fractions refused, not truncated), or one
    clear refusal."""
    try:
        result = tuple(int(v) for v in values)
        exact = all(float(v) == r for v, r in zip(values, result))
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be {ndim} integers, got {values!r}") from None
    if not exact or len(result) != ndim or any(v < minimum for v in result):
        raise InvalidInputError(f"{name} must be {ndim} integers >= {minimum}, got {values!r}")
    return result


def whole_numbers(values) -> tuple[int, ...] | None:
    """``values`` as integers when each is one (to within float rounding), else None."""
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return tuple(int(round(v)) for v in values) if all(
        abs(v - round(v)) < 1e-9 for v in values) else None


def voxel_grid(scale, translate) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(voxel size, offset) of a scale and translate that fit funlib's integral geometry
    (whole positive sizes, a whole offset, in any relation to the size: funlib, OME-Zarr
    and napari take an offset of 10 with voxels of 4), else None."""
    voxel_size, offset = whole_numbers(scale), whole_numbers(translate)
    if voxel_size is None or offset is None or any(v <= 0 for v in voxel_size):
        return None
    return voxel_size, offset


def region_inside(roi, spatial: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(offset, shape) of ``roi`` (an (offset, shape) pair, or None for the whole volume),
    refused unless it lies inside a volume of shape ``spatial``."""
    ndim = len(spatial)
    offset, shape = roi if roi is not None else ((0,) * ndim, tuple(spatial))
    if len(offset) != ndim or len(shape) != ndim:
        raise InvalidInputError(f"--roi takes {ndim} offsets and {ndim} sizes, e.g. "
                                + " ".join(["0"] * ndim + ["32"] * ndim))
    offset = voxels("the roi offset", offset, ndim, 0)
    shape = voxels("the roi shape", shape, ndim, 1)
    if any(o + s > n for o, s, n in zip(offset, shape, spatial)):
        raise InvalidInputError(f"roi {offset} + {shape} is not inside the volume "
                                f"{tuple(spatial)}")
    return offset, shape


def split_roi(values: Sequence[int] | None):
    """``--roi`` as typed, offsets then sizes, as an (offset, shape) pair (None: none);
    ``region_inside`` checks it against the volume."""
    if not values:
        return None
    half = len(values) // 2
    return tuple(values[:half]), tuple(values[half:])


def check_offsets_fit(shape: Sequence[int], offsets) -> None:
    """Refuse a region that some offset is as long as or longer than: no edge of it fits (a
    preview of a crop drops such offsets; a run over the region cannot)."""
    for offset in offsets:
        if any(abs(o) >= s for o, s in zip(offset, shape)):
            axis = next(i for i, (o, s) in enumerate(zip(offset, shape)) if abs(o) >= s)
            raise InvalidInputError(
                f"the region {tuple(shape)} is not longer than offset {tuple(offset)} along "
                f"axis {axis}: no edge of that offset fits; use a larger region or other "
                "offsets")
