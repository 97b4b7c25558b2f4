"""Names of the attributes written on output arrays: provenance and the completion flag.

A module of its own so the blockwise job process can check completion without importing
funlib.persistence and dask (half a second per process start).
"""

COMPLETE_ATTR = "mutex_watershed_complete"
PARAMETERS_ATTR = "mutex_watershed_parameters"
