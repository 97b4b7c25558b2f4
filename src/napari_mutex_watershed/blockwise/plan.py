"""The plan of a blockwise run: geometry, paths and parameters, saved as JSON.

Workers (local processes or cluster jobs) receive only the path of this file, and a
resumed run must match it, so a half-finished output is never completed with other settings.
"""

from __future__ import annotations

import itertools
import json
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from funlib.geometry import Coordinate, Roi
from pydantic import BaseModel, ConfigDict

from ..parameters import WatershedParameters

PLAN_FILE = "plan.json"
#: Layout of the block records and the default context; a run left by an older layout is
#: not resumed (its records would not fit), it has to be overwritten.
RECORD_FORMAT = 3
WORK_DIR = ".mutex_watershed"  # suffix of the folder beside the output container


class BlockwisePlan(BaseModel):
    """Everything a worker needs to process any block of the run."""

    model_config = ConfigDict(extra="forbid")

    input_path: str
    output_path: str
    work_dir: str
    parameters: WatershedParameters
    roi_offset: tuple[int, ...]  # voxels, in the input array
    shape: tuple[int, ...]  # voxels of the processed region
    block_size: tuple[int, ...]
    num_workers: int = 2
    max_retries: int = 2
    timeout: float | None = None
    worker_command: str | None = None
    progress: Literal["bar", "json", "none"] = "bar"
    record_format: int = RECORD_FORMAT

    # ------------------------------------------------------------------ identity
    def identity(self) -> dict:
        """What must match for a run to resume another one's blocks."""
        return self.model_dump(
            mode="json",
            include={"input_path", "parameters", "roi_offset", "shape", "block_size",
                     "record_format"},
        )

    def save(self) -> Path:
        path = Path(self.work_dir) / PLAN_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> BlockwisePlan:
        data = json.loads(Path(path).read_text())
        data.setdefault("record_format", 1)  # written before the field existed
        return cls.model_validate(data)

    # ------------------------------------------------------------------ geometry
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @cached_property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(-(-s // b) for s, b in zip(self.shape, self.block_size))

    @property
    def num_blocks(self) -> int:
        return int(np.prod(self.grid_shape))

    @property
    def block_voxels(self) -> int:
        """Fragment ids of block b are b * block_voxels + 1 .. b * block_voxels + n_b."""
        return int(np.prod(self.block_size))

    @cached_property
    def context(self) -> tuple[int, ...]:
        return self.parameters.context_voxels()

    @cached_property
    def smoothing_margin(self) -> int:
        return int(np.ceil(3 * self.parameters.sigma)) if self.parameters.sigma > 0 else 0

    def total_roi(self) -> Roi:
        return Roi((0,) * self.ndim, self.shape)

    def grid_position(self, write_roi: Roi) -> tuple[int, ...]:
        position = tuple(o // b for o, b in zip(write_roi.offset, self.block_size))
        if any(o % b for o, b in zip(write_roi.offset, self.block_size)):
            raise ValueError(f"block {write_roi} is not on the block grid {self.block_size}")
        return position

    def block_index(self, position) -> int:
        return int(np.ravel_multi_index(tuple(position), self.grid_shape))

    def core(self, position) -> Roi:
        offset = Coordinate(p * b for p, b in zip(position, self.block_size))
        return Roi(offset, self.block_size).intersect(self.total_roi())

    def neighbours(self, position):
        """Grid positions of the blocks around one block (faces, edges and corners)."""
        for step in itertools.product((-1, 0, 1), repeat=self.ndim):
            if any(step):
                other = tuple(p + s for p, s in zip(position, step))
                if all(0 <= o < g for o, g in zip(other, self.grid_shape)):
                    yield other

    def inner_faces(self, position) -> tuple[tuple[bool, bool], ...]:
        """Per axis: is there a block below and above this one?"""
        return tuple((p > 0, p < g - 1) for p, g in zip(position, self.grid_shape))

    # ------------------------------------------------------------------ files
    @property
    def fragments_path(self) -> Path:
        return Path(self.work_dir) / "fragments.zarr"

    @property
    def records_dir(self) -> Path:
        return Path(self.work_dir) / "blocks"

    @property
    def tracking_dir(self) -> Path:
        return Path(self.work_dir) / "tracking"

    @property
    def lookup_path(self) -> Path:
        """Final id of every fragment, by position; written last, so it marks step 2 done."""
        return Path(self.work_dir) / "lookup.npy"

    @property
    def bases_path(self) -> Path:
        """Position of each block's first fragment in the lookup table."""
        return Path(self.work_dir) / "bases.npy"

    def block_record(self, index: int) -> Path:
        """Per-block fragment statistics and halo labels, written when step 1 finishes it."""
        return self.records_dir / f"{index}.npz"

    def match_record(self, index: int) -> Path:
        """Stitched fragment pairs found in one block's halo (step 2)."""
        return self.records_dir / f"{index}.matches.npy"
