"""What a sweep command names, opened and checked: the crop of affinities, the ground truth
over it, the parameters to start from and the grid of settings.

Any format the storage reads; one line for each refusal. The ground truth's 0 is
"unlabelled", and where it does not reach (a truth that covers part of the volume, placed by
its offset) counts as 0 too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from ..parameters import WatershedParameters
from ..regions import region_inside
from .grid import DEFAULT_BIASES, Setting, parameter_grid, parse_values


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

    affinities = open_affinities(input_path)
    base = parameters_for(affinities, parameters)
    spatial = tuple(int(s) for s in affinities.array.shape[1:])
    location = array_path(truth_path, "ground_truth")
    if not location.exists() and not split_path(truth_path, "ground_truth")[0].is_file():
        raise InvalidInputError(f"no ground truth at {location}: the path does not exist")
    truth = open_volume(location, "ground_truth").funlib()  # any format storage reads
    if truth.voxel_size != affinities.voxel_size or len(truth.shape) != len(spatial):
        raise InvalidInputError(
            f"the ground truth ({len(truth.shape)}D, voxel size {truth.voxel_size}) does not "
            f"match the affinities ({len(spatial)}D, voxel size {affinities.voxel_size})")
    if truth.roi.offset == affinities.spatial_roi.offset and truth.roi != affinities.spatial_roi:
        raise InvalidInputError(
            f"the ground truth has shape {tuple(truth.shape)} but the affinities "
            f"{spatial}, both starting at {tuple(truth.roi.offset)}: they do not line up (a "
            "truth that covers part of the volume needs its offset in its metadata)")
    offset, shape = region_inside(roi, spatial)
    voxel_size = affinities.voxel_size
    world = Roi(affinities.spatial_roi.offset + Coordinate(offset) * voxel_size,
                Coordinate(shape) * voxel_size)
    data = SweepData(affinities=affinities.array.to_ndarray(world),
                     ground_truth=truth.to_ndarray(world, fill_value=0),
                     base=base, offset=offset, shape=shape)
    if not data.labelled:
        raise InvalidInputError(f"the ground truth has no labelled voxel in {offset} + {shape}")
    return data


def settings_for(base: WatershedParameters, bias=None, threshold=None,
                 min_size=None) -> list[Setting]:
    """The grid from values as typed (numbers and start:stop:step ranges); by default the
    biases DaCapo swept."""
    try:
        return parameter_grid(
            base,
            bias=parse_values(bias) if bias else list(DEFAULT_BIASES),
            threshold=parse_values(threshold),
            min_size=parse_values(min_size, int),
        )
    except ValueError as error:
        raise InvalidInputError(str(error)) from None
