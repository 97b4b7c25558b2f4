"""Workers on a cluster: each started through a command template (SLURM, LSF, ...).

The template gets the worker command in ``{command}`` (as words) or ``{quoted_command}`` (as
one shell word, for ``sbatch --wrap``), the name of the run's jobs in ``{name}`` and a folder
for the scheduler's output files in ``{logs}``; daisy's connection details travel in the
DAISY_CONTEXT environment variable, which these schedulers forward. ``--cluster`` builds the
template (``scheduler``).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from ..errors import BlockwiseError
from . import fatal
from .plan import BlockwisePlan
from .scheduler import job_name

#: The module a cluster worker runs: ``python -m WORKER_MODULE PLAN.json STEP``.
WORKER_MODULE = "napari_mutex_watershed.blockwise.worker"


class ClusterWorkerLauncher:
    """0-argument daisy worker function: starts one worker through a command template, for
    example ``sbatch --wait --wrap "{command}"`` or ``bsub -K {command}``."""

    def __init__(self, template: str, plan_path: str, step: str):
        self.template = template
        self.plan_path = plan_path
        self.step = step

    def __call__(self) -> None:
        plan = BlockwisePlan.load(self.plan_path)
        command = shlex.join([sys.executable, "-m", WORKER_MODULE, self.plan_path, self.step])
        logs = Path(plan.work_dir) / "logs" / self.step
        logs.mkdir(parents=True, exist_ok=True)  # schedulers write their files, not folders
        launch = self.template.format(command=command, quoted_command=shlex.quote(command),
                                      name=job_name(plan.work_dir), logs=shlex.quote(str(logs)))
        # stderr is kept for the one line a failing command gets, and passed on to the log
        result = subprocess.run(launch, shell=True, stderr=subprocess.PIPE, text=True,
                                errors="replace")
        sys.stderr.write(result.stderr)
        fatal.record_launch(plan.work_dir, self.step, result.returncode, launch, result.stderr)
        if result.returncode != 0:
            # after a round of failures in a row, stop the run instead of launching again
            message = fatal.failing_launches(plan.work_dir, fatal.launch_limit(plan))
            if message:
                fatal.report_fatal(plan.work_dir, message)
            raise BlockwiseError(f"worker command exited with code {result.returncode}")
