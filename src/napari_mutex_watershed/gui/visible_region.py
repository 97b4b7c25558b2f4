"""Which part of a layer's data is on screen: pure numpy, no Qt or napari import.

napari's ``layer.corner_pixels`` is not usable for this (inclusive upper bound, 0 on
non-displayed axes, updated only on draw, chunk-padded for multiscale). Instead the visible
box is derived from what the viewer says about the view:

- the camera centre (world coordinates of the displayed axes) and zoom (screen pixels per
  world unit),
- the canvas size in screen pixels, (height, width),
- the current world point (``viewer.dims.point``) for the axes that are not displayed,
- the layer's world -> data transform.

All coordinates are napari's: a data voxel ``i`` covers ``[i - 0.5, i + 0.5]``, and a
non-displayed axis shows the slice ``round(data coordinate)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import NotVisible


@dataclass(frozen=True)
class Region:
    """A crop of the spatial axes of a layer, in data indices (stop exclusive).

    ``start``/``stop`` is what gets segmented (visible box plus context); ``shown_start`` /
    ``shown_stop`` is the part of it whose labels are displayed (the whole crop in a 3D view,
    the current slice on non-displayed axes in a 2D view).
    """

    start: tuple[int, ...]
    stop: tuple[int, ...]
    shown_start: tuple[int, ...]
    shown_stop: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.start, self.stop))

    @property
    def slices(self) -> tuple[slice, ...]:
        """Slices of the spatial axes of the data selecting the crop."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))

    @property
    def shown_shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.shown_start, self.shown_stop))

    @property
    def shown_in_crop(self) -> tuple[slice, ...]:
        """Slices of the crop selecting the displayed part."""
        return tuple(
            slice(s - a, e - a) for a, s, e in zip(self.start, self.shown_start, self.shown_stop)
        )

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def visible_world_box(
    camera_center: Sequence[float],
    zoom: float,
    canvas_size: Sequence[float],
    ndisplay: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) world coordinates of the displayed axes that the canvas shows.

    2D: the canvas rectangle; rows (canvas height) are the first displayed axis. 3D: a cube
    around the camera centre whose side is the larger canvas extent, a bound of what can be
    seen from any angle at that zoom.
    """
    if zoom <= 0:
        raise ValueError(f"zoom must be positive, got {zoom}")
    height, width = (float(v) for v in canvas_size)
    center = np.asarray(camera_center, dtype=float)[-ndisplay:]
    if ndisplay == 2:
        half = np.array([height, width]) / (2.0 * zoom)
    elif ndisplay == 3:
        half = np.full(3, max(height, width) / (2.0 * zoom))
    else:
        raise ValueError(f"ndisplay must be 2 or 3, got {ndisplay}")
    return center - half, center + half


def visible_data_box(
    world_point: Sequence[float],
    displayed: Sequence[int],
    world_low: np.ndarray,
    world_high: np.ndarray,
    world_to_data: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds (low, high) in data coordinates of every layer axis of a world-space box.

    The displayed world axes span ``[world_low, world_high]``; the others sit at
    ``world_point``. Every corner is mapped with ``world_to_data`` (which takes a full world
    point, as ``layer.world_to_data`` does), so flips and rotations give the bounding box.
    """
    point = np.asarray(world_point, dtype=float)
    corners = []
    for choice in itertools.product((0, 1), repeat=len(displayed)):
        corner = point.copy()
        for axis, c, lo, hi in zip(displayed, choice, world_low, world_high):
            corner[axis] = hi if c else lo
        corners.append(np.asarray(world_to_data(corner), dtype=float))
    corners = np.array(corners)
    return corners.min(axis=0), corners.max(axis=0)


def _voxel_range(low: float, high: float, n: int) -> tuple[int, int]:
    """Indices of voxels (each covering [i - .5, i + .5]) overlapping (low, high), clipped."""
    start = int(np.floor(low - 0.5)) + 1
    stop = int(np.ceil(high + 0.5))
    return max(start, 0), min(stop, n)


def _cap(start: int, stop: int, centre: float, max_size: int) -> tuple[int, int]:
    """At most ``max_size`` voxels of [start, stop), centred on ``centre`` where possible."""
    if stop - start <= max_size:
        return start, stop
    lo = int(np.round(centre)) - max_size // 2
    lo = min(max(lo, start), stop - max_size)
    return lo, lo + max_size


def visible_region(
    *,
    data_shape: Sequence[int],
    spatial_axes: Sequence[int],
    world_point: Sequence[float],
    displayed: Sequence[int],
    camera_center: Sequence[float],
    zoom: float,
    canvas_size: Sequence[float],
    world_to_data: Callable[[np.ndarray], np.ndarray],
    context: int = 0,
    max_size: int = 96,
) -> Region:
    """The crop of a layer's spatial axes to segment for the current view.

    Parameters
    ----------
    data_shape
        Shape of the layer's data (all axes, e.g. (C, Z, Y, X)).
    spatial_axes
        Layer axes that are spatial (e.g. (1, 2, 3)); the others (the channel axis) must
        not be displayed.
    world_point, displayed
        ``viewer.dims.point`` and ``viewer.dims.displayed`` (world axes).
    camera_center, zoom, canvas_size
        ``viewer.scene.camera.center``, ``.zoom`` and ``viewer.canvas.size``.
    world_to_data
        ``layer.world_to_data``: full world point -> data coordinates of every layer axis.
    context
        2D view: slices of context on each side along non-displayed spatial axes.
    max_size
        Cap on the crop's extent along each displayed axis, centred on the camera centre.

    Raises NotVisible if the current slice is outside the data or the view misses it, and
    ValueError if a non-spatial axis (channels) is displayed.
    """
    ndisplay = len(displayed)
    world_ndim = len(world_point)
    layer_ndim = len(data_shape)
    first = world_ndim - layer_ndim  # napari aligns a layer with the trailing world axes
    displayed_layer = [w - first for w in displayed if w - first >= 0]
    non_spatial = set(range(layer_ndim)) - set(spatial_axes)
    if non_spatial & set(displayed_layer):
        raise ValueError(
            "the channel axis is displayed: show the spatial axes "
            "(e.g. roll the dimensions) to preview"
        )
    if len([a for a in displayed_layer if a in spatial_axes]) < ndisplay:
        raise NotVisible("the layer has fewer displayed spatial axes than the view")

    world_low, world_high = visible_world_box(camera_center, zoom, canvas_size, ndisplay)
    data_low, data_high = visible_data_box(
        world_point, displayed, world_low, world_high, world_to_data
    )
    centre_world = np.asarray(world_point, dtype=float).copy()
    for axis, c in zip(displayed, np.asarray(camera_center, dtype=float)[-ndisplay:]):
        centre_world[axis] = c
    centre_data = np.asarray(world_to_data(centre_world), dtype=float)

    start, stop, shown_start, shown_stop = [], [], [], []
    for axis in spatial_axes:
        n = int(data_shape[axis])
        if axis in displayed_layer:
            a, b = _voxel_range(data_low[axis], data_high[axis], n)
            if b <= a:
                raise NotVisible("the view does not show any of the layer")
            a, b = _cap(a, b, centre_data[axis], max_size)
            start.append(a), stop.append(b), shown_start.append(a), shown_stop.append(b)
        else:
            index = int(np.round(centre_data[axis]))
            if not 0 <= index < n:
                raise NotVisible("the current slice is outside the layer")
            start.append(max(index - context, 0))
            stop.append(min(index + context + 1, n))
            shown_start.append(index)
            shown_stop.append(index + 1)
    return Region(tuple(start), tuple(stop), tuple(shown_start), tuple(shown_stop))


def placement(layer, origin: Sequence[int] | None = None) -> dict:
    """Layer keyword arguments (scale, translate, rotate, shear, affine, units) for a layer
    of ``layer``'s spatial axes (all but its first, the channels) whose voxel 0 sits exactly
    on ``layer``'s data voxel ``origin`` (default 0): its whole transform, so results sit on
    a rotated, sheared or affine-transformed layer too. ValueError when that transform mixes
    the channel axis with space (no layer of the spatial axes alone can follow it)."""
    n = layer.ndim
    rotate = np.asarray(layer.rotate, float)
    shear = _shear_matrix(layer.shear, n)
    affine = np.asarray(layer.affine.affine_matrix, float)
    for matrix in (rotate, shear, affine[:n, :n]):
        if not (np.allclose(matrix[0, 1:], 0) and np.allclose(matrix[1:, 0], 0)):
            raise ValueError(f"'{layer.name}' has a transform that mixes its channel axis "
                             "with space: set its rotate, shear and affine on the spatial "
                             "axes only")
    start = np.zeros(n - 1) if origin is None else np.asarray(origin, float)
    placed = {
        "scale": tuple(np.asarray(layer.scale[1:], float)),
        "translate": np.asarray(layer.translate[1:], float),
        "rotate": rotate[1:, 1:],
        "shear": shear[1:, 1:],  # whole: napari keeps a shear that is not upper-triangular
        "affine": affine[1:, 1:],
        "units": tuple(layer.units)[1:],
    }
    placed["translate"] = tuple(placed["translate"] + _linear(placed) @ start)
    return placed


def _linear(placed: dict) -> np.ndarray:
    """A placement's rotate @ shear @ scale: a voxel step in the layer's physical space."""
    return (np.asarray(placed["rotate"], float) @ np.asarray(placed["shear"], float)
            @ np.diag(np.asarray(placed["scale"], float)))


def _shear_matrix(shear, n: int) -> np.ndarray:
    """napari keeps an upper-triangular shear as its n (n - 1) / 2 values, any other whole."""
    shear = np.asarray(shear, float)
    if shear.ndim == 2:
        return shear
    full = np.eye(n)
    full[np.triu_indices(n, 1)] = shear
    return full


def world_map(placed: dict) -> tuple[tuple, tuple]:
    """(linear map as rows, translate) taking a voxel index of a layer at ``placed`` (from
    ``placement``) to napari's world coordinates, as its whole transform does: the affine
    after translate + rotate @ shear @ scale. For the world positions messages give."""
    k = len(placed["scale"])
    affine = np.asarray(placed["affine"], float)
    outer, shift = affine[:k, :k], affine[:k, k]
    return (tuple(map(tuple, outer @ _linear(placed))),
            tuple(outer @ np.asarray(placed["translate"], float) + shift))


#: What ``apply_placement`` sets: ``units`` are set once, when the layer is made.
PLACED = ("scale", "translate", "rotate", "shear", "affine")


def apply_placement(layer, placed: dict) -> None:
    """Move ``layer`` to ``placed`` (from ``placement``), setting only what changed: each
    set re-slices the layer (10-30 ms in 3D)."""
    current = {"scale": layer.scale, "translate": layer.translate, "rotate": layer.rotate,
               "shear": _shear_matrix(layer.shear, layer.ndim),
               "affine": layer.affine.affine_matrix}
    for name in PLACED:
        if not np.allclose(current[name], placed[name]):
            setattr(layer, name, placed[name])
