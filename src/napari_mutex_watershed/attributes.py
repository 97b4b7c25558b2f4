"""Names of the attributes written on output arrays: provenance and the completion flag.

A module of its own so the blockwise job process can check completion without importing
funlib.persistence and dask (half a second per process start).
"""

COMPLETE_ATTR = "mutex_watershed_complete"
PARAMETERS_ATTR = "mutex_watershed_parameters"
#: Every attribute this tool writes starts so: what marks an array as ours to replace.
OUR_ATTRIBUTE_PREFIX = "mutex_watershed_"
VERSION_ATTR = "mutex_watershed_version"
INPUT_ATTR = "mutex_watershed_input"
BLOCK_SIZE_ATTR = "mutex_watershed_block_size"
#: Marks sample data written by ``napari-mutex-watershed sample``: ours to replace.
SAMPLE_ATTR = "mutex_watershed_sample"
#: Written by the plugin's zarr writer on exported Labels layers.
EXPORT_ATTR = "mutex_watershed_export"
#: What a blockwise result says about how it was made, carried into a layer's metadata.
PROVENANCE_ATTRS = (BLOCK_SIZE_ATTR, INPUT_ATTR, COMPLETE_ATTR)
