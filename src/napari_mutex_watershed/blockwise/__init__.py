"""Blockwise segmentation of zarr volumes with daisy: fragments, stitching, relabelling.

Built on the engine; knows nothing of Qt or napari. Start a run with
``launch.segment_blockwise_zarr``. This package imports nothing itself, so daisy workers
(which import its step modules) start quickly.
"""
