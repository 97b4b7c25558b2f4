"""The plan of a blockwise run: geometry, paths and parameters, saved as JSON.

Workers (local processes or cluster jobs) receive only the path of this file, and a
resumed run must match it, so a half-finished output is never completed with other settings.
"""

from __future__ import annotations

import itertools
import json
import os
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from funlib.geometry import Coordinate, Roi
from pydantic import BaseModel, ConfigDict

from ..parameters import WatershedParameters
from .block_shape import band_width, is_small_region, odd_halo

PLAN_FILE = "plan.json"
#: Layout of the block records and the default context; a run left by an older layout is
#: not resumed (its records would not fit), it has to be overwritten.
RECORD_FORMAT = 5
WORK_DIR = ".mutex_watershed"  # suffix of the folder beside the output container
#: The folder of the block records in a run's work folder.
RECORDS_FOLDER = "blocks"
#: The file in a step's tracking folder that marks it done by the job process itself.
DONE_HERE = "done-here"


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
    #: The scheduler whose jobs ``worker_command`` submits (``--cluster``): the run's jobs are
    #: cancelled through it when the run ends (``scheduler``).
    cluster: Literal["slurm", "lsf"] | None = None
    progress: Literal["bar", "json", "none"] = "bar"
    record_format: int = RECORD_FORMAT
    #: The output's zarr format (OME-Zarr 0.5 on 3, 0.4 on 2); None in plans written before
    #: outputs were OME-Zarr labels, so those are not resumed into the new layout.
    zarr_format: int | None = None
    #: Arrays over the affinities' voxel grid (``mask_seeds``): voxels outside the mask stay
    #: 0; each seed id is one object with that id.
    mask_path: str | None = None
    seeds_path: str | None = None

    # ------------------------------------------------------------------ identity
    def identity(self) -> dict:
        """What must match for a run to resume another one's blocks."""
        return self.model_dump(
            mode="json",
            include={"input_path", "parameters", "roi_offset", "shape", "block_size",
                     "record_format", "zarr_format", "mask_path", "seeds_path"},
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
    def is_one_block(self) -> bool:
        """One block on this machine: segmented in one process, no workers (``whole``)."""
        return self.num_blocks == 1 and not self.worker_command

    @property
    def runs_in_caller(self) -> bool:
        """One block of a region that is one block by default: a library call segments it in
        its own process, as a bare call would, rather than start a job process (a fresh
        Python importing numpy and zarr, about 0.45 s; docs/blockwise.md, *Speed*)."""
        return self.is_one_block and is_small_region(self.shape)

    @cached_property
    def ids_per_block(self) -> int:
        """Fragment ids of block b are b * ids_per_block + 1 .. b * ids_per_block + n_b: an odd
        block numbers its core and the bands it labels again, at most this many voxels."""
        return int(np.prod([b + 2 * w for b, w in zip(self.block_size, self.band)]))

    @cached_property
    def context(self) -> tuple[int, ...]:
        """Halo of an even block, which is segmented alone."""
        return self.parameters.context_voxels()

    @cached_property
    def band(self) -> tuple[int, ...]:
        """Voxels on the even side of a face that the odd block across it labels again
        (``block_shape.band_width``)."""
        return band_width(self.parameters)

    @cached_property
    def odd_context(self) -> tuple[int, ...]:
        """Halo of an odd block (``block_shape.odd_halo``)."""
        return odd_halo(self.parameters)

    @staticmethod
    def is_odd(position) -> bool:
        """Blocks are coloured like a checkerboard: every face neighbour has the other colour."""
        return sum(position) % 2 == 1

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

    def even_positions_in(self, lo, hi) -> list[tuple[int, ...]]:
        """The even blocks that the box [lo, hi) overlaps."""
        first = [a // s for a, s in zip(lo, self.block_size)]
        last = [(b - 1) // s for b, s in zip(hi, self.block_size)]
        return [p for p in itertools.product(*[range(f, t + 1) for f, t in zip(first, last)])
                if not self.is_odd(p)]

    def inner_faces(self, position) -> tuple[tuple[bool, bool], ...]:
        """Per axis: is there a block below and above this one?"""
        return tuple((p > 0, p < g - 1) for p, g in zip(position, self.grid_shape))

    def face_neighbours(self, position):
        """(axis, step, position) of each block across a face of this one: step -1 below,
        1 above."""
        for axis, size in enumerate(self.grid_shape):
            for step in (-1, 1):
                neighbour = list(position)
                neighbour[axis] += step
                if 0 <= neighbour[axis] < size:
                    yield axis, step, tuple(neighbour)

    # ------------------------------------------------------------------ files
    @property
    def fragments_path(self) -> Path:
        return Path(self.work_dir) / "fragments.zarr"

    @property
    def labels_path(self) -> Path:
        """The OME-Zarr labels group; ``output_path`` is its level 0, which workers write."""
        return Path(self.output_path).parent

    @property
    def records_dir(self) -> Path:
        return Path(self.work_dir) / RECORDS_FOLDER

    @property
    def tracking_dir(self) -> Path:
        return Path(self.work_dir) / "tracking"

    def done_here(self, step: str) -> bool:
        """Did the job process finish ``step`` itself (``relabel_here``)? daisy's steps keep
        their own markers in the same folder."""
        return (self.tracking_dir / step / DONE_HERE).exists()

    def mark_done_here(self, step: str) -> None:
        folder = self.tracking_dir / step
        folder.mkdir(parents=True, exist_ok=True)
        (folder / DONE_HERE).touch()

    @property
    def claims_dir(self) -> Path | None:
        """The claims of a local run's blocks (``claims``); cluster workers take none."""
        return None if self.worker_command else Path(self.work_dir) / "claims"

    @property
    def lookup_path(self) -> Path:
        """Final id of every fragment, by position; written last: it marks the stitch done."""
        return Path(self.work_dir) / "lookup.npy"

    @property
    def bases_path(self) -> Path:
        """Position of each block's first fragment in the lookup table."""
        return Path(self.work_dir) / "bases.npy"

    def block_record(self, index: int) -> Path:
        """Per-block fragment statistics, joins and bands, written when its step finishes it."""
        return self.records_dir / f"{index}.npz"

    def recorded_blocks(self) -> set[int]:
        """Indices of the blocks whose record is written (one listing, not a look per block)."""
        return block_indices_in(self.records_dir, ".npz")


def block_indices_in(directory: Path, suffix: str = "") -> set[int]:
    """The block indices named by the files in ``directory`` (``<index><suffix>``)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return set()
    stems = (name[:len(name) - len(suffix)] for name in names if name.endswith(suffix))
    return {int(stem) for stem in stems if stem.isdigit()}
