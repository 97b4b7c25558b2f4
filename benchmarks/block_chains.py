"""Which worker ran which block when, read from the blocks' records while a run goes on.

A block's record (``plan.block_record``) holds when the block started and how long it and
its kernel took; the job removes the records once the run is complete, so they are read as
they appear. The blocks are then chained into workers: each block goes to the worker whose
last block ended closest before it started. The chains show where workers waited: between
two blocks (a step whose ready blocks ran out) or at the end (the last block's wait).

    with BlockChains.of_output(output) as chains:
        ...run...
    print(chains.text(started))   # started: the run's start (time.time())
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tree_memory import Sampler

#: A block starting this much before another worker's block ends still follows it.
SLACK = 0.005


class BlockChains(Sampler):
    #: Seconds between two looks at the records' folder.
    interval = 0.02

    def __init__(self, records_dir: Path):
        super().__init__()
        self.records_dir = Path(records_dir)
        self.blocks: dict[int, tuple[float, float, float]] = {}  # start, seconds, kernel s

    @classmethod
    def of_output(cls, output) -> BlockChains:
        """The chains of the run writing ``output`` (imported here: a module that imports
        this one can also run in an older checkout's processes, ``--compare``)."""
        from napari_mutex_watershed.blockwise.launch import work_dir_for
        from napari_mutex_watershed.blockwise.plan import RECORDS_FOLDER

        return cls(work_dir_for(output) / RECORDS_FOLDER)

    def sample(self) -> None:
        """Read the records that appeared since the last look."""
        if not self.records_dir.is_dir():
            return
        for path in self.records_dir.glob("*.npz"):
            if not path.stem.isdigit() or int(path.stem) in self.blocks:
                continue
            try:
                with np.load(path) as record:
                    self.blocks[int(path.stem)] = (float(record["block_started"]),
                                                   float(record["block_seconds"]),
                                                   float(record["kernel_seconds"]))
            except (OSError, KeyError, ValueError):  # removed meanwhile: the run ended
                continue

    def chains(self, started: float) -> list[list[tuple[float, float, float, int]]]:
        """Per worker, its blocks as (start, end, kernel seconds, index), times from
        ``started``."""
        workers: list[list[tuple[float, float, float, int]]] = []
        for begin, seconds, kernel, index in sorted(
                (s - started, seconds, k, i) for i, (s, seconds, k) in self.blocks.items()):
            free = [w for w in workers if w[-1][1] <= begin + SLACK]
            block = (begin, begin + seconds, kernel, index)
            if free:
                min(free, key=lambda w: begin - w[-1][1]).append(block)
            else:
                workers.append([block])
        return workers

    def text(self, started: float) -> str:
        """A line per worker: its blocks, its waits between blocks, and the gap between the
        workers' ends."""
        workers = self.chains(started)
        if not workers:
            return "no block records seen"
        ends = [w[-1][1] for w in workers]
        lines = [f"{len(self.blocks)} blocks on {len(workers)} workers; the workers ended "
                 f"{max(ends) - min(ends):.2f} s apart"]
        for number, chain in enumerate(workers):
            waits = [b[0] - a[1] for a, b in zip(chain, chain[1:])]
            lines.append(
                f"  worker {number}: first block at {chain[0][0]:.2f} s, last end "
                f"{chain[-1][1]:.2f} s, waits between blocks {sum(waits):.2f} s (longest "
                f"{max(waits, default=0.0):.2f}); block: start-end (kernel) "
                + " ".join(f"{i}: {b:.1f}-{e:.1f} ({k:.1f})" for b, e, k, i in chain))
        return "\n".join(lines)
