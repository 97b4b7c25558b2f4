"""What a sweep command names, opened and checked: the crop of affinities, the ground truth
over it, the parameters to start from and the grid of settings.

Any format the storage reads; one line for each refusal. The ground truth's 0 is
"unlabelled", and where it does not reach (a truth that covers part of the volume, placed by
its offset) counts as 0 too; negative ids (a common "ignore") count as unlabelled, with a
line that says so. A truth that stores no geometry and has the affinities' spatial shape
covers the affinities' voxels. The crop's values are checked once, before any setting runs.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError, InvalidValuesError
from ..parameters import WatershedParameters
from ..regions import region_inside
from .grid import DEFAULT_BIASES, Setting, parameter_grid, parse_values

logger = logging.getLogger(__name__)


@dataclass
class SweepData:
    """A crop ready to sweep: affinities (C, ...) and the ground truth over the same voxels."""

    affinities: np.ndarray
    ground_truth: np.ndarray
    base: WatershedParameters
    offset: tuple[int, ...]
    shape: tuple[int, ...]

    @property
    def labelled(self) -> int:
        return int(np.count_nonzero(self.ground_truth))


def open_sweep_data(input_path, truth_path, parameters=None, roi=None) -> SweepData:
    """Open the affinities and the ground truth, check they line up, crop ``roi`` (an
    (offset, shape) pair in voxels, None for the whole volume)."""
    from funlib.geometry import Coordinate, Roi

    from ..storage import array_path, open_affinities, open_volume, parameters_for, split_path
    from ..storage.inputs import say_note

    affinities = open_affinities(input_path)
    base = parameters_for(affinities, parameters)
    spatial = tuple(int(s) for s in affinities.array.shape[1:])
    location = array_path(truth_path, "ground_truth")
    if not location.exists() and not split_path(truth_path, "ground_truth")[0].is_file():
        raise InvalidInputError(f"no ground truth at {location}: the path does not exist")
    volume = open_volume(location, "ground_truth")  # any format storage reads
    if np.dtype(volume.data.dtype).kind not in "biu":
        raise InvalidInputError(f"the ground truth {location} has dtype {volume.data.dtype}: "
                                "ground truth holds integer ids (0 = unlabelled)")
    stores_geometry = volume.kind == "ome-zarr" or any(
        key in volume.attrs for key in ("voxel_size", "resolution", "offset"))
    if not stores_geometry and tuple(volume.data.shape) == spatial:
        volume = dataclasses.replace(volume, voxel_size=tuple(affinities.voxel_size),
                                     offset=tuple(affinities.spatial_roi.offset))
        logger.warning("%s: no voxel size or offset stored: taken to cover the affinities' "
                       "voxels", location)
    else:
        say_note(location, volume.note)
    truth = volume.funlib()
    if truth.voxel_size != affinities.voxel_size or len(truth.shape) != len(spatial):
        raise InvalidInputError(
            f"the ground truth ({len(truth.shape)}D, voxel size {truth.voxel_size}) does not "
            f"match the affinities ({len(spatial)}D, voxel size {affinities.voxel_size})")
    stores_offset = volume.kind == "ome-zarr" or "offset" in volume.attrs
    if (not stores_offset and truth.roi.offset == affinities.spatial_roi.offset
            and truth.roi != affinities.spatial_roi):  # a crop taken to start at 0
        raise InvalidInputError(
            f"the ground truth has shape {tuple(truth.shape)} but the affinities "
            f"{spatial}, both starting at {tuple(truth.roi.offset)}: they do not line up (a "
            "truth that covers part of the volume needs its offset in its metadata)")
    voxel_size = affinities.voxel_size
    apart = truth.roi.offset - affinities.spatial_roi.offset
    if any(a % v for a, v in zip(apart, voxel_size)):
        raise InvalidInputError(
            f"the ground truth starts at {tuple(truth.roi.offset)}, off the affinities' voxel "
            f"grid (offset {tuple(affinities.spatial_roi.offset)}, voxel size "
            f"{tuple(voxel_size)}): they do not line up")
    offset, shape = region_inside(roi, spatial)
    world = Roi(affinities.spatial_roi.offset + Coordinate(offset) * voxel_size,
                Coordinate(shape) * voxel_size)
    data = SweepData(affinities=affinities.array.to_ndarray(world),
                     ground_truth=truth.to_ndarray(world, fill_value=0),
                     base=base, offset=offset, shape=shape)
    _check_values(data.affinities, base, offset)
    negative = int(np.count_nonzero(data.ground_truth < 0))
    if negative:
        data.ground_truth = np.where(data.ground_truth > 0, data.ground_truth, 0)
        logger.warning("%s: %d voxels with negative ids counted as unlabelled", location,
                       negative)
    if not data.labelled:
        raise InvalidInputError(f"the ground truth has no labelled voxel in {offset} + {shape}")
    if not _an_object_of_two(data.ground_truth):
        raise InvalidInputError(f"no object of the ground truth has two voxels in {offset} + "
                                f"{shape}: the scores need one")
    return data


def _an_object_of_two(truth: np.ndarray) -> bool:
    """Does some labelled object have at least two voxels (else Rand scores are 0/0)?"""
    _, counts = np.unique(truth[truth > 0], return_counts=True)
    return bool(counts.size) and int(counts.max()) >= 2


def _check_values(affinities: np.ndarray, parameters: WatershedParameters, offset) -> None:
    """The checks every setting would make, made once (its voxel in the input's own
    coordinates), so a bad input stops the sweep before any worker starts."""
    from ..engine.weights import check_affinities, check_values

    channels = check_affinities(affinities, parameters)
    if affinities.dtype == np.uint8:
        return
    try:
        for channel in channels:
            check_values(affinities[channel], channel)
    except InvalidValuesError as error:
        raise error.at(offset) from None


def settings_for(base: WatershedParameters, bias=None, threshold=None,
                 min_size=None, keep_bias: bool = False) -> list[Setting]:
    """The grid from values as typed (numbers and start:stop:step ranges); without ``bias``
    the biases DaCapo swept, or ``base``'s own with ``keep_bias`` (a parameters file that
    sets one)."""
    if keep_bias and not bias and not threshold and not min_size:
        raise InvalidInputError("the parameters file sets the bias, which the sweep keeps: give "
                                "threshold or min size values to sweep, or biases to sweep "
                                "instead")
    try:
        return parameter_grid(
            base,
            bias=parse_values(bias) if bias else None if keep_bias else list(DEFAULT_BIASES),
            threshold=parse_values(threshold),
            min_size=parse_values(min_size, int),
        )
    except ValueError as error:
        raise InvalidInputError(str(error)) from None
