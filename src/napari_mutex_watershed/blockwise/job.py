"""The job process: runs a plan's steps, even blocks -> odd blocks (piped) -> stitch ->
relabel -> pyramid, resumable at every step.

    python -m napari_mutex_watershed.blockwise.job [PLAN.json]

``supervise.JobProcess`` starts it before the plan exists and hands it the plan's path and
the output's lock on stdin; a signal to that process group cancels the run. ``run_plan``
also runs in-process (a library call of one block, tests). The job's one line on failure
goes to ``error.txt``, the details to ``run.log`` (``fatal``).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import daisy

from ..errors import BlockwiseError, MutexWatershedError
from ..freed_memory import workers_keep_freed_memory
from ..processes import exit_at_once, stop_descendants
from ..storage.chunk_files import open_local_array
from ..storage.levels import is_marked_complete, mark_complete
from . import fatal
from .disk import no_space, no_space_error, remove_temporaries
from .lock import note_job
from .plan import PLAN_FILE, BlockwisePlan
from .progress import ColourProgress, ProgressReporter, blocks_by_colour
from .scheduler import cancel_jobs, start_attempt
from .supervise import DEBUG_ENV, STOPPED, receive_plan
from .zygote import start_zygote, stop_zygote

STEPS = ("even", "odd", "stitch", "relabel", "pyramid")
#: Local regions up to this many voxels are relabelled and get their pyramid in the job
#: process, in threads (``relabel_here``): there that work (about 0.05 s per million voxels)
#: costs less than a worker start for each of those steps (0.5 to 1 s; docs/blockwise.md,
#: *Speed*).
IN_PROCESS_VOXELS = 2**24


def _run_tasks(plan, tasks, reporter) -> dict:
    """Run daisy tasks, each piped after the one before; raise for the first that failed,
    else return daisy's states."""
    pipeline = tasks[0]
    for task in tasks[1:]:
        pipeline = pipeline + task
    try:
        states = daisy.run_blockwise(
            pipeline,
            progress=True if plan.progress == "bar" else reporter,
            summary=False,
            return_states=True,
        )
    except RuntimeError as error:  # daisy gives up on a task whose workers keep dying
        failed = next((t for t in tasks if t.failed_blocks()), tasks[-1])
        raise BlockwiseError(
            f"{failed.task_id}: {_failed_blocks(failed)}{_last_line(str(error))}"
        ) from None
    for task in tasks:
        state = states[task.task_id]
        done = state.completed_count + state.skipped_count
        if done < state.total_block_count:
            error = state.last_worker_error or state.abandon_reason or "no message"
            waiting = state.total_block_count - done - state.failed_count
            raise BlockwiseError(
                f"{task.task_id}: {_failed_blocks(task)}after {plan.max_retries + 1} tries "
                f"({waiting} more could not run): {_last_line(error)}"
            )
    return states


def _failed_blocks(task) -> str:
    failed = [tuple(b.write_roi.offset) for b in task.failed_blocks()]
    if not failed:
        return ""
    more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
    return f"{len(failed)} block(s) failed, at voxel offsets {failed[:5]}{more}, "


def _last_line(error: str) -> str:
    """The exception line of a worker traceback, without the module path of its type."""
    lines = [line for line in error.strip().splitlines() if line.strip()]
    line = next((x for x in reversed(lines) if not x.startswith((" ", "Traceback"))), lines[-1])
    head, _, message = line.partition(": ")
    return f"{head.rsplit('.', 1)[-1]}: {message}" if message else line


def relabels_here(plan: BlockwisePlan) -> bool:
    """Do the relabel and the pyramid run in the job process (``IN_PROCESS_VOXELS``)?"""
    return not plan.worker_command and math.prod(plan.shape) <= IN_PROCESS_VOXELS


def blocks_done(plan: BlockwisePlan) -> dict[str, tuple[int, int]]:
    """Per block step, (blocks an earlier attempt finished, blocks): the even and odd blocks
    by their records, the relabel by daisy's markers or, done in the job process, its mark."""
    totals = blocks_by_colour(plan, range(plan.num_blocks))
    # once stitched, every block is done (the records may be gone)
    recorded = totals if plan.lookup_path.exists() else blocks_by_colour(
        plan, plan.recorded_blocks())
    done = {colour: (recorded[colour], totals[colour]) for colour in ("even", "odd")}
    if plan.done_here("relabel"):
        done["relabel"] = (plan.num_blocks, plan.num_blocks)
        return done
    marker = plan.tracking_dir / "relabel" / "done"  # daisy's, once the relabel started
    try:
        relabelled = int(open_local_array(marker)[...].sum()) if marker.exists() else 0
    except Exception:  # half written
        relabelled = 0
    done["relabel"] = (relabelled, plan.num_blocks)
    return done


def is_complete(plan: BlockwisePlan) -> bool:
    return is_marked_complete(plan.output_path)


def run_plan(plan_path: str | Path) -> dict:
    """Run (or resume) the job described by a saved plan; return a summary."""
    plan_path = str(plan_path)
    plan = BlockwisePlan.load(plan_path)
    started = time.time()
    reporter = ProgressReporter(plan.progress, started)
    if is_complete(plan):
        reporter.emit("done", plan.num_blocks, plan.num_blocks)
        return {"skipped": True, "seconds": time.time() - started}
    remove_temporaries(Path(plan.work_dir))
    if plan.is_one_block or plan.worker_command:  # no local workers
        stop_zygote()
    if plan.is_one_block:
        from .whole import run_whole

        summary = run_whole(plan, reporter)
    else:
        with workers_keep_freed_memory():
            summary = _run_blocks(plan, plan_path, reporter)
    return _finish(plan, started, reporter, summary)


def _run_blocks(plan: BlockwisePlan, plan_path: str, reporter) -> dict:
    """The steps of a run of several blocks. Their modules are imported here: a run of one
    block, which must start fast, needs none of them."""
    from .pyramid import pyramid_levels
    from .relabel import RelabelBlocks
    from .relabel_here import relabel_and_pyramid_here
    from .stitch import build_lookup

    # daisy's per-worker logs; set here, not for one block, which may run in a library
    # caller's process (``launch._run_here``)
    daisy.logging.set_log_basedir(str(Path(plan.work_dir) / "logs"))
    summary = {}
    if plan.lookup_path.exists():  # stitched: every block of both colours is done
        for colour, total in blocks_by_colour(plan, range(plan.num_blocks)).items():
            reporter.emit(colour, total, total, failed=0, skipped=total)
    else:
        _run_fragment_blocks(plan, plan_path, reporter)
        reporter.emit("stitch", 0, 1)
        summary = build_lookup(plan)
    reporter.emit("stitch", 1, 1, **summary)
    if relabels_here(plan):
        relabel_and_pyramid_here(plan, plan_path, reporter)
        return summary
    # the pyramid's levels (one step each, "pyramid-1", ...) follow the relabelled blocks
    steps = [RelabelBlocks(plan_path), *pyramid_levels(plan_path)]
    _run_tasks(plan, [step.daisy_task() for step in steps], reporter)
    return summary


def _run_fragment_blocks(plan: BlockwisePlan, plan_path: str, reporter) -> None:
    """The even and odd blocks: locally one pool of workers for both (``claims``), on a
    cluster the odd step piped after the even step (an odd block starts as soon as the even
    blocks around it are done)."""
    from .claims import POOLED_STEP, BlockClaims, LocalBlocks, pooled
    from .even_blocks import EvenBlocks
    from .odd_blocks import OddBlocks

    if pooled(plan):
        claims = BlockClaims(plan)
        claims.new_attempt()
        reporter.split[POOLED_STEP] = ColourProgress(plan, given_up=claims.given_up)
        state = _run_tasks(plan, [LocalBlocks(plan_path).daisy_task()], reporter)[POOLED_STEP]
        claims.check_complete(state.last_worker_error and _last_line(state.last_worker_error))
    else:
        reporter.split.update((c, ColourProgress(plan, (c,))) for c in ("even", "odd"))
        _run_tasks(plan, [EvenBlocks(plan_path).daisy_task(), OddBlocks(plan_path).daisy_task()],
                   reporter)


def _finish(plan: BlockwisePlan, started: float, reporter, summary: dict) -> dict:
    """Mark the output complete and keep only what makes a rerun return at once."""
    mark_complete(plan.output_path)  # level 0 and the labels group
    # only the plan (which makes a rerun return at once) and daisy's tiny markers stay
    shutil.rmtree(plan.fragments_path, ignore_errors=True)
    shutil.rmtree(plan.records_dir, ignore_errors=True)
    if plan.claims_dir is not None:
        shutil.rmtree(plan.claims_dir, ignore_errors=True)
    plan.lookup_path.unlink(missing_ok=True)
    plan.bases_path.unlink(missing_ok=True)
    summary["seconds"] = round(time.time() - started, 3)
    reporter.emit("done", plan.num_blocks, plan.num_blocks, **summary)
    return summary


def _log_to(path: Path) -> None:
    """Everything (daisy's warnings, worker tracebacks it relays, our summaries) goes to the
    run's log; the terminal gets progress and one line, unless ``--debug``.

    daisy's scheduler logs from Rust and its workers inherit our stderr, so the descriptor
    itself points at the log; Python's ``sys.stderr`` (where progress bars go) keeps the
    terminal."""
    root = logging.getLogger()
    root.handlers.clear()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    logging.raiseExceptions = False  # a full disk must not print logging's own tracebacks
    # a thread's uncaught error (the watchdog's) goes to the log, not to the terminal
    threading.excepthook = lambda hook: root.error(
        "uncaught in thread %s", hook.thread.name if hook.thread else "?",
        exc_info=(hook.exc_type, hook.exc_value, hook.exc_traceback))
    if os.environ.get(DEBUG_ENV):
        root.addHandler(logging.StreamHandler(sys.stderr))
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    log = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 2)
    os.close(log)
    sys.stderr = os.fdopen(terminal, "w", buffering=1, errors="replace")


def main(argv=None) -> int:
    """Entry of the job process. Its one-line message on failure goes to ``error.txt`` in
    the run's folder, for whoever started it; details go to ``run.log`` beside it."""
    plan_path = (sys.argv[1:] if argv is None else argv)[0]
    plan = BlockwisePlan.load(plan_path)
    work_dir = Path(plan.work_dir)
    _log_to(work_dir / fatal.LOG_FILE)
    log = logging.getLogger("napari_mutex_watershed")

    def fail(message: str) -> int:
        log.error(message)
        fatal.write_reserved(work_dir / fatal.ERROR_FILE, message)
        return 1

    def stop_at_once(message: str) -> None:
        fail(message)
        stop_descendants()
        if jobs:  # cluster: what the stopped workers submitted
            cancel_jobs(plan.cluster, jobs)
        logging.shutdown()
        os._exit(1)  # daisy's scheduler cannot be stopped from another thread

    try:
        fatal.clear(work_dir)  # an earlier attempt's failure
    except OSError as error:  # our caller finds the disk full
        log.error("cannot reserve the message files: %s", error)
        return 1
    # cluster: this attempt's jobs carry one name; a guard cancels them once this process
    # is gone, however it ends (scheduler.py)
    jobs = (start_attempt(plan.cluster, work_dir, work_dir / fatal.LOG_FILE)
            if plan.cluster else None)
    watchdog = fatal.Watchdog(work_dir, stop_at_once)
    watchdog.start()
    os.environ[fatal.WATCHED_ENV] = "1"  # for the workers daisy starts
    try:
        log.info("run %s", plan_path)
        summary = run_plan(plan_path)
        log.info("finished: %s", summary)
    except MutexWatershedError as error:
        log.exception("the run failed")
        # a block's own message says more than daisy's summary of it
        return fail(fatal.read_text(work_dir / fatal.FATAL_FILE) or str(error))
    except OSError as error:
        log.exception("the run failed")
        if no_space(error):
            return fail(str(no_space_error(error.filename or work_dir)))
        return fail(f"{type(error).__name__}: {error}")
    except Exception as error:
        log.exception("the run failed")
        return fail(f"unexpected {type(error).__name__}: {error}")
    except KeyboardInterrupt:  # SIGINT to this process alone (the command's Ctrl-C stops it)
        log.exception("the run was interrupted")
        return fail(f"the run's job process was interrupted (SIGINT): {STOPPED}")
    except BaseException as error:  # a Rust panic (pyo3's PanicException), not SystemExit
        if isinstance(error, SystemExit):
            raise
        log.exception("the run failed")
        return fail(f"unexpected {type(error).__name__}: {error}")
    finally:
        watchdog.stop()
        if jobs:  # a failed run leaves none queued (the guard would, a moment later)
            cancel_jobs(plan.cluster, jobs)
    return 0


def start() -> int:
    """``python -m ...blockwise.job [PLAN]``: without PLAN the plan's path (and the output's
    lock) come on stdin; nothing there: no job, exit quietly."""
    from . import whole  # noqa: F401  (what every run needs, loaded while the plan is made)

    start_zygote()  # before any thread of ours: local workers are forked from it

    if sys.argv[1:]:
        plan, held = sys.argv[1], []
    else:
        plan, held = receive_plan(sys.stdin)
    for fd in held:  # the lock stays ours while this process lives
        note_job(fd)
    return main([plan]) if plan else 0


__all__ = ["PLAN_FILE", "STEPS", "BlockwiseError", "blocks_done", "is_complete", "run_plan"]


if __name__ == "__main__":
    exit_at_once(start())
