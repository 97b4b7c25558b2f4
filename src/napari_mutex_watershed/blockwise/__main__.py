"""The job process that ``supervise.JobProcess`` starts: ``python -m napari_mutex_watershed.blockwise
[PLAN]``. Without PLAN it reads the plan's path from stdin (nothing: no job, exit quietly), so it
can import while its parent still validates the request."""

import sys

from .run import main

plan = sys.argv[1:] or [sys.stdin.readline().strip()]
sys.exit(main(plan) if plan[0] else 0)
