"""The job process that ``run.start`` supervises: ``python -m napari_mutex_watershed.blockwise PLAN``."""

import sys

from .run import main

sys.exit(main())
