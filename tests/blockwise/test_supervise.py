"""The job process the command starts early, before it knows whether it needs one."""

import signal

from napari_mutex_watershed.blockwise.supervise import JobProcess


def test_an_early_job_given_no_plan_is_stopped_rather_than_waited_for():
    """Until it has a plan the job only imports (0.4 s): nothing of ours to let finish."""
    job = JobProcess()
    job.abandon()
    assert job.process.returncode == -signal.SIGKILL
