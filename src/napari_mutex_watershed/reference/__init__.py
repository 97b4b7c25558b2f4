"""Implementation of :mod:`napari_mutex_watershed.dacapo`, the DaCapo-compatible API.

Import from ``napari_mutex_watershed.dacapo``; the split into modules here is an internal
detail (arrays, the generic blockwise runner, the post-processor).
"""
