"""The job process that ``supervise.JobProcess`` starts: ``python -m napari_mutex_watershed.blockwise
[PLAN]``. Without PLAN it reads the plan's path (and the output's lock) from stdin (nothing: no
job, exit quietly), so it can import while its parent still validates the request."""

import sys

from .lock import note_job
from .run import main
from .supervise import receive_plan

if sys.argv[1:]:
    plan, held = sys.argv[1], []
else:
    plan, held = receive_plan(sys.stdin)
for fd in held:  # the lock stays ours while this process lives
    note_job(fd)
sys.exit(main([plan]) if plan else 0)
