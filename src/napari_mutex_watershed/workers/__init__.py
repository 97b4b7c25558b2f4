"""Ready-made worker files for :func:`napari_mutex_watershed.dacapo.segment_blockwise`.

They are files, not modules to import: pass their path, e.g.
``segment_blockwise(WATERSHED_WORKER, context, total_roi, read_roi, write_roi, ...)``.
"""

from pathlib import Path

#: Mutex watershed of each block (with context) into globally unique fragment ids.
WATERSHED_WORKER = Path(__file__).with_name("watershed_worker.py")

__all__ = ["WATERSHED_WORKER"]
