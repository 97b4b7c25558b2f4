"""Step 1 of a blockwise run: fragments of one block and the edges that stitch it.

Each block is segmented with ``context`` voxels of halo and cropped to its core. Blocks run
in daisy's conflict-free waves, so when a block runs, each neighbour is either finished or not
started: the block records the edges across every face it shares with a finished neighbour,
and the later of two neighbours always does. Edges keep the strongest attractive and the
strongest repulsive weight per fragment pair, which is what a mutex watershed over all voxels
would have acted on first; fragments of one block that touch a face also get a mutex edge
between them, so the global step cannot undo the block's own decision to keep them apart.
"""

from __future__ import annotations

import os
import time
import zlib

import numpy as np
import zarr

from ..engine import edge_slices, edge_weights, finalize, run_kernel
from ..engine.weights import check_affinities
from .plan import BlockwisePlan


def box(lo, hi) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def grow_clipped(lo, hi, amount, shape):
    return (
        tuple(max(a - m, 0) for a, m in zip(lo, amount)),
        tuple(min(b + m, s) for b, m, s in zip(hi, amount, shape)),
    )


def relative(inner_lo, inner_hi, outer_lo) -> tuple[slice, ...]:
    return tuple(slice(a - o, b - o) for a, b, o in zip(inner_lo, inner_hi, outer_lo))


def aggregate_edges(u, v, w):
    """Per unordered pair: the strongest attractive and the strongest repulsive weight."""
    u, v = np.minimum(u, v), np.maximum(u, v)
    attractive = w > 0
    order = np.lexsort((w, attractive, v, u))
    u, v, w, attractive = u[order], v[order], w[order], attractive[order]
    new_group = np.ones(len(u), bool)
    new_group[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1]) | (attractive[1:] != attractive[:-1])
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], len(u)) - 1
    # sorted ascending by w inside a group: attractive keep the last (max), repulsive the first (min)
    pick = np.where(attractive[starts], ends, starts)
    return u[pick], v[pick], w[pick]


class FragmentStep:
    """Picklable block function: daisy ships it to every worker process."""

    def __init__(self, plan_path: str):
        self.plan_path = plan_path
        self._plan = None
        self._input = None
        self._fragments = None

    def _open(self):
        if self._plan is None:
            self._plan = BlockwisePlan.load(self.plan_path)
            self._input = zarr.open_array(self._plan.input_path, mode="r")
            self._fragments = zarr.open_array(str(self._plan.fragments_path), mode="r+")
        return self._plan

    def __call__(self, block) -> None:
        plan = self._open()
        process_block(plan, self._input, self._fragments, plan.grid_position(block.write_roi))


def process_block(plan: BlockwisePlan, source, fragments, position) -> None:
    parameters = plan.parameters
    index = plan.block_index(position)
    core = plan.core(position)
    lo, hi = tuple(core.begin), tuple(core.end)
    shape = plan.shape

    kernel_lo, kernel_hi = grow_clipped(lo, hi, plan.context, shape)
    edge_lo, edge_hi = grow_clipped(lo, hi, plan.margin, shape)
    reach = tuple(max(c, m) + plan.smoothing_margin for c, m in zip(plan.context, plan.margin))
    read_lo, read_hi = grow_clipped(lo, hi, reach, shape)

    read = (slice(None),) + box(
        [o + a for o, a in zip(plan.roi_offset, read_lo)],
        [o + b for o, b in zip(plan.roi_offset, read_hi)],
    )
    affinities = source[read]
    check_affinities(affinities, parameters)
    weights, nn_mean = edge_weights(
        affinities,
        parameters,
        random_state=zlib.crc32(f"{parameters.seed}:{index}".encode()),
        keep_nn_mean=parameters.threshold > 0,
    )
    del affinities

    in_kernel = (slice(None),) + relative(kernel_lo, kernel_hi, read_lo)
    kernel_started = time.perf_counter()
    raw = run_kernel(np.ascontiguousarray(weights[in_kernel]), parameters)
    kernel_seconds = time.perf_counter() - kernel_started
    local = finalize(raw[relative(lo, hi, kernel_lo)])  # consecutive 1..n, no filters yet
    del raw
    n_fragments = int(local.max())
    base = np.uint64(index) * np.uint64(plan.block_voxels)
    ids = np.where(local > 0, local.astype(np.uint64) + base, np.uint64(0))
    fragments[box(lo, hi)] = ids

    sizes = np.bincount(local.ravel(), minlength=n_fragments + 1)
    nn_sums = (
        np.bincount(local.ravel(), weights=nn_mean[relative(lo, hi, read_lo)].ravel(),
                    minlength=n_fragments + 1)
        if nn_mean is not None
        else np.zeros(0)
    )

    cross = _cross_edges(plan, fragments, weights, position, lo, hi, edge_lo, edge_hi, read_lo)
    intra = _intra_edges(plan, local, weights, lo, hi, read_lo, base)
    u, v, w = (np.concatenate(pair) for pair in zip(cross, intra))
    if len(u):
        u, v, w = aggregate_edges(u, v, w)

    record = plan.block_record(index)
    record.parent.mkdir(parents=True, exist_ok=True)
    partial = record.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(partial, u=u, v=v, w=w, sizes=sizes, nn_sums=nn_sums, kernel_seconds=kernel_seconds)
    os.replace(partial, record)  # atomic: a record on disk means the block is finished


def _cross_edges(plan, fragments, weights, position, lo, hi, edge_lo, edge_hi, read_lo):
    """Edges between this block's core and every finished neighbour."""
    labels = fragments[box(edge_lo, edge_hi)]
    valid = np.zeros(labels.shape, bool)
    in_core = np.zeros(labels.shape, bool)
    in_core[relative(lo, hi, edge_lo)] = True
    valid |= in_core
    for other in plan.neighbours(position):
        if plan.block_record(plan.block_index(other)).exists():
            theirs = plan.core(other)
            a = [max(b, e) for b, e in zip(theirs.begin, edge_lo)]
            z = [min(b, e) for b, e in zip(theirs.end, edge_hi)]
            if all(x < y for x, y in zip(a, z)):
                valid[relative(a, z, edge_lo)] = True
    region = relative(edge_lo, edge_hi, read_lo)
    us, vs, ws = [], [], []
    for channel, offset in zip(weights, plan.parameters.offsets):
        source, target = edge_slices(offset, labels.shape)
        u, v = labels[source], labels[target]
        keep = (in_core[source] != in_core[target]) & valid[source] & valid[target]
        keep &= (u != 0) & (v != 0)
        us.append(u[keep])
        vs.append(v[keep])
        ws.append(channel[region][source][keep])
    return np.concatenate(us), np.concatenate(vs), np.concatenate(ws)


def _intra_edges(plan, local, weights, lo, hi, read_lo, base):
    """Mutex edges between fragments of this block that both touch a shared face."""
    shell = np.zeros(local.shape, bool)
    for axis, (m, a, b, n) in enumerate(zip(plan.margin, lo, hi, plan.shape)):
        index = [slice(None)] * local.ndim
        if a > 0:
            index[axis] = slice(0, m)
            shell[tuple(index)] = True
        if b < n:
            index[axis] = slice(max(local.shape[axis] - m, 0), None)
            shell[tuple(index)] = True
    on_face = np.zeros(int(local.max()) + 1, bool)
    on_face[local[shell]] = True
    on_face[0] = False
    core = relative(lo, hi, read_lo)
    us, vs, ws = [], [], []
    for channel, offset in zip(weights, plan.parameters.offsets):
        source, target = edge_slices(offset, local.shape)
        u, v = local[source], local[target]
        keep = (u != v) & on_face[u] & on_face[v]
        us.append(u[keep])
        vs.append(v[keep])
        ws.append(channel[core][source][keep])
    u, v, w = np.concatenate(us), np.concatenate(vs), np.concatenate(ws)
    if len(u):
        u, v, w = aggregate_edges(u, v, w)
    return u.astype(np.uint64) + base, v.astype(np.uint64) + base, w
