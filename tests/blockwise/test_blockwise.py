"""Blockwise runs with real daisy workers on small synthetic volumes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest
import zarr
from patience import patience, wait_gone
from skimage.metrics import adapted_rand_error

from napari_mutex_watershed import WatershedParameters, segment
from napari_mutex_watershed.attributes import COMPLETE_ATTR, PARAMETERS_ATTR
from napari_mutex_watershed.blockwise.launch import (
    fragment_chunks,
    holds_work,
    plan_run,
    segment_blockwise_zarr,
    work_dir_for,
)
from napari_mutex_watershed.blockwise.plan import RECORD_FORMAT, BlockwisePlan
from napari_mutex_watershed.blockwise.run_outputs import output_state
from napari_mutex_watershed.errors import BlockwiseError, InvalidInputError, OutputExistsError
from napari_mutex_watershed.storage import create_array, labels_level0, write_affinities
from napari_mutex_watershed.synthetic import affinities_from_labels, sample_volume

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "napari_mutex_watershed.cli"]
PARAMS = WatershedParameters(bias_short=0.4, bias_long=0.6)


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    affinities, truth, offsets = sample_volume((24, 64, 64), seed=3)
    path = tmp_path_factory.mktemp("bw") / "in.zarr" / "affinities"
    write_affinities(path, affinities, offsets)
    return path, affinities, truth


def read(path) -> np.ndarray:
    """Level 0 of the OME-Zarr labels at ``path`` (or the array itself)."""
    return zarr.open_array(str(labels_level0(path)), mode="r")[:]


def test_blockwise_reproduces_whole_volume(volume, tmp_path):
    path, affinities, _ = volume
    out = segment_blockwise_zarr(path, tmp_path / "o.zarr/labels", PARAMS, block_size=(12, 32, 32),
                                 num_workers=2, progress="none", supervised=False)
    blockwise = read(out)
    whole = segment(affinities, PARAMS)
    assert blockwise.dtype == np.uint32
    assert adapted_rand_error(whole, blockwise)[0] < 0.01
    ids = np.unique(blockwise)
    assert ids[0] == 0 and np.array_equal(ids[1:], np.arange(1, len(ids)))  # consecutive
    array = zarr.open_array(str(out))
    assert array.attrs[COMPLETE_ATTR] is True
    assert WatershedParameters.model_validate(array.attrs[PARAMETERS_ATTR]) == PARAMS
    assert not (work_dir_for(tmp_path / "o.zarr/labels") / "fragments.zarr").exists()


def test_context_changes_the_result(volume, tmp_path):
    path, affinities, _ = volume
    results = []
    for context in ([1, 2, 2], [3, 9, 9]):
        params = PARAMS.model_copy(update={"context": context})
        out = segment_blockwise_zarr(path, tmp_path / f"c{context[0]}.zarr/labels", params,
                                     block_size=(12, 32, 32), progress="none", supervised=False)
        results.append(read(out))
    assert not np.array_equal(results[0], results[1])


def test_a_branch_that_meets_beyond_the_face_keeps_one_id(tmp_path):
    # a U: two arms in the lower block, joined by a bar in the upper block beyond the lower
    # block's halo. The lower block sees two objects; only the contained pair of the thin arm
    # joins it to the rest. A cube apart from the U must stay apart.
    truth = np.zeros((32, 12, 24), np.uint32)
    truth[2:26, 4:8, 2:8] = 1     # thick arm
    truth[2:26, 4:8, 16:19] = 1   # thin arm, 8 voxels from the thick one
    truth[22:26, 4:8, 2:19] = 1   # the bar, 6 voxels past the face at z = 16
    truth[4:10, 4:8, 11:13] = 2   # a separate object between the arms
    offsets = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (3, 0, 0), (0, 3, 0), (0, 0, 3)]
    affinities = affinities_from_labels(truth, offsets, sigma=0, noise=0)
    path = tmp_path / "in.zarr" / "affinities"
    write_affinities(path, affinities, offsets)
    parameters = WatershedParameters(offsets=offsets, bias=0.5, context=(3, 3, 3))
    out = segment_blockwise_zarr(path, tmp_path / "o.zarr/labels", parameters,
                                 block_size=(16, 12, 24), num_workers=2, progress="none",
                                 supervised=False)
    labels = read(out)
    assert len(np.unique(labels[truth == 1])) == 1
    assert len(np.unique(labels[truth == 2])) == 1
    assert labels[truth == 1][0] != labels[truth == 2][0]


def test_fragment_ids_never_collide():
    plan = BlockwisePlan(input_path="i", output_path="o", work_dir="w", parameters=PARAMS,
                         roi_offset=(0, 0, 0), shape=(100_000, 100_000, 100_000),
                         block_size=(64, 64, 64))
    last = plan.block_index(tuple(g - 1 for g in plan.grid_shape))
    # block b owns ids b * ids_per_block + 1 .. (b + 1) * ids_per_block: disjoint, and < 2^64
    assert (last + 1) * plan.ids_per_block < 2**64


@pytest.mark.parametrize("block", [(64, 64, 64), (12, 32, 32), (33, 64, 20), (512, 512), (7,)])
def test_fragment_chunks_tile_the_block(block):
    # a block's writes must cover whole chunks, or two workers would rewrite one chunk
    chunks = fragment_chunks(block)
    assert all(b % c == 0 for b, c in zip(block, chunks))


def test_blocks_too_large_for_local_ids_are_refused(tmp_path):
    # an empty (never written) input: only its metadata is read
    create_array(tmp_path / "huge.zarr/affinities", "affinities", (6, 2048, 2048, 2048),
                 np.float32, ["c^", "z", "y", "x"],
                 attributes={"offsets": [list(o) for o in PARAMS.offsets]})
    with pytest.raises(InvalidInputError, match="2\\*\\*32"):
        plan_run(tmp_path / "huge.zarr/affinities", tmp_path / "p.zarr/labels", PARAMS,
                 block_size=(2048, 2048, 2048))
    assert not (tmp_path / "p.zarr/labels").exists()


def test_2d_blockwise(tmp_path):
    affinities, _, offsets = sample_volume((160, 160), seed=1)
    path = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    params = WatershedParameters(offsets=offsets, bias_short=0.4, bias_long=0.6)
    out = segment_blockwise_zarr(path, tmp_path / "in.zarr/labels", params, block_size=(64, 64),
                                 progress="none", supervised=False)
    assert adapted_rand_error(segment(affinities, params), read(out))[0] < 0.01


def test_an_output_that_holds_nothing_computed_is_replaced_without_overwrite(volume, tmp_path):
    """Left by a run refused for its values or stopped before its first block, an output of
    ours holds nothing a run computed: a run with other settings replaces it (the widget asks
    nothing). Once a chunk of labels is written, it needs --overwrite. (Recorded blocks:
    ``test_mask_seeds``; a complete output: the test below.)"""
    path, _, _ = volume
    target = tmp_path / "o.zarr/labels"
    first = plan_run(path, target, PARAMS, block_size=(12, 32, 32))  # made, nothing computed
    assert not holds_work(first)
    other = PARAMS.model_copy(update={"bias_short": 0.45})
    assert output_state(path, target, other, (12, 32, 32), (24, 64, 64)) == "absent"
    replaced = plan_run(path, target, other, block_size=(12, 32, 32))
    assert replaced.identity() != first.identity()
    assert zarr.open_group(str(target)).attrs[PARAMETERS_ATTR]["bias_short"] == 0.45
    zarr.open_array(replaced.output_path, mode="r+")[:12, :32, :32] = 1  # one chunk of labels
    assert holds_work(replaced)
    assert output_state(path, target, PARAMS, (12, 32, 32), (24, 64, 64)) == "other"
    with pytest.raises(OutputExistsError, match="--overwrite"):
        plan_run(path, target, PARAMS, block_size=(12, 32, 32))
    # named through a symlink it is the same output, with the same plan beside it
    (tmp_path / "link.zarr").symlink_to(tmp_path / "o.zarr")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        plan_run(path, tmp_path / "link.zarr/labels", PARAMS, block_size=(12, 32, 32))
    zarr.open_array(replaced.output_path, mode="r+")[:12, :32, :32] = 0  # no chunk left
    assert not holds_work(replaced)
    linked = plan_run(path, tmp_path / "link.zarr/labels", PARAMS, block_size=(12, 32, 32))
    assert linked.work_dir == replaced.work_dir
    assert zarr.open_group(str(target)).attrs[PARAMETERS_ATTR]["bias_short"] == 0.4
    # without a plan of ours beside it, what an output holds is not known: it counts as work
    shutil.rmtree(linked.work_dir)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        plan_run(path, target, other, block_size=(12, 32, 32))
    # an array of ours with labels in the labels' place, no level 0 (an older layout)
    older = tmp_path / "older.zarr/labels"
    create_array(older, "labels", (24, 64, 64), np.uint32, ["z", "y", "x"],
                 attributes={PARAMETERS_ATTR: PARAMS.model_dump(mode="json")})
    zarr.open_array(str(older), mode="r+")[:12] = 1
    with pytest.raises(OutputExistsError, match="--overwrite"):
        plan_run(path, older, other, block_size=(12, 32, 32))


def test_refuses_existing_output_and_bad_block_size(volume, tmp_path):
    path, _, _ = volume
    target = tmp_path / "o.zarr/labels"
    segment_blockwise_zarr(path, target, PARAMS, block_size=(12, 32, 32), progress="none", supervised=False)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        plan_run(path, target, PARAMS.model_copy(update={"bias_short": 0.5}), block_size=(12, 32, 32))
    # left by a version with other block records or another default halo: same settings,
    # but not resumed (plans written before the field existed have none)
    plan_file = work_dir_for(target) / "plan.json"
    current = json.loads(plan_file.read_text())
    for older in ({**current, "record_format": RECORD_FORMAT - 1},
                  {k: v for k, v in current.items() if k != "record_format"}):
        plan_file.write_text(json.dumps(older))
        with pytest.raises(OutputExistsError, match="--overwrite"):
            plan_run(path, target, PARAMS, block_size=(12, 32, 32))
    with pytest.raises(InvalidInputError, match="smaller than the block size"):
        plan_run(path, tmp_path / "p.zarr/labels", PARAMS, block_size=(12, 8, 8))
    with pytest.raises(InvalidInputError, match="at least 1"):
        plan_run(path, tmp_path / "p.zarr/labels", PARAMS.model_copy(update={"context": [0, 9, 9]}),
                 block_size=(12, 32, 32))


def _run_cli(args, **kwargs):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs)


def test_rerun_of_finished_job_is_quick(volume, tmp_path):
    path, _, _ = volume
    args = ["segment", path, tmp_path / "o.zarr/labels", "--block-size", 12, 32, 32,
            "--bias-short", 0.4, "--bias-long", 0.6, "--progress", "none"]
    assert _run_cli(args).returncode == 0
    first = read(tmp_path / "o.zarr/labels")
    logs = sorted(work_dir_for(tmp_path / "o.zarr/labels").rglob("worker_*"))
    again = _run_cli(args)
    assert again.returncode == 0
    # quick because it does nothing: no step and no worker ran again
    assert again.stdout.startswith("already complete: ")
    assert sorted(work_dir_for(tmp_path / "o.zarr/labels").rglob("worker_*")) == logs
    assert np.array_equal(first, read(tmp_path / "o.zarr/labels"))


def _start_cli(args):
    return subprocess.Popen(CLI + [str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_as_from_a_terminal)


def _as_from_a_terminal() -> None:
    """SIGINT and SIGHUP as a command typed in a terminal has them: a test runner started
    in the background (or under nohup) passes them on ignored."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _wait_for_blocks(output, n, process, timeout=40):
    records = work_dir_for(output) / "blocks"
    deadline = time.monotonic() + patience(timeout)
    while time.monotonic() < deadline:
        if records.exists() and len(list(records.glob("*[0-9].npz"))) >= n:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("the run never got going")


@pytest.fixture(scope="module")
def bigger(tmp_path_factory):
    affinities, _, offsets = sample_volume((48, 96, 96), seed=5)
    path = tmp_path_factory.mktemp("big") / "in.zarr" / "affinities"
    write_affinities(path, affinities, offsets)
    return path


def test_killed_run_resumes_to_identical_output(bigger, tmp_path):
    args = lambda out: ["segment", bigger, out, "--block-size", 12, 24, 24, "--workers", 2,  # noqa: E731
                        "--bias-short", 0.4, "--bias-long", 0.6, "--progress", "none"]
    reference = tmp_path / "ref.zarr/labels"
    assert _run_cli(args(reference)).returncode == 0

    output = tmp_path / "out.zarr/labels"
    process = _start_cli(args(output))
    # a worker writes a block's record just before daisy marks the block done, so each of
    # the 2 workers may die between the two: 7 records leave at least 5 blocks marked
    _wait_for_blocks(output, 7, process)
    os.killpg(process.pid, signal.SIGKILL)  # the CLI, the job and every worker
    process.wait()
    assert not psutil.pid_exists(process.pid)
    assert zarr.open(str(output)).attrs[COMPLETE_ATTR] is False

    resumed = _run_cli(args(output)[:-1] + ["json"])
    assert resumed.returncode == 0, resumed.stderr
    progress = [json.loads(line) for line in resumed.stdout.splitlines() if line.startswith("{")]
    assert max(p.get("skipped", 0) for p in progress if p["phase"] == "even") >= 5
    assert np.array_equal(read(reference), read(output))


def test_odd_blocks_start_only_after_the_even_blocks_around_them(bigger, tmp_path):
    # an odd block that started before the even blocks around it would raise, fail and show
    # in the progress and the worker logs; both colours are computed by one pool of
    # --workers workers
    output = tmp_path / "o.zarr/labels"
    run = _run_cli(["segment", bigger, output, "--block-size", 12, 24, 24, "--workers", 2,
                    "--bias-short", 0.4, "--bias-long", 0.6, "--progress", "json"])
    assert run.returncode == 0, run.stderr
    progress = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert {p["phase"] for p in progress} >= {"even", "odd", "stitch", "relabel", "done"}
    assert all(p.get("failed", 0) == 0 for p in progress)
    logs = work_dir_for(output) / "logs"
    assert sorted(f.name for f in (logs / "blocks").glob("*.err")) == [
        "worker_0.err", "worker_1.err"]
    assert not (logs / "even").exists() and not (logs / "odd").exists()
    assert not any("started before" in f.read_text() for f in logs.rglob("*.err"))


def test_cancel_stops_every_process(bigger, tmp_path):
    output = tmp_path / "out.zarr/labels"
    process = _start_cli(["segment", bigger, output, "--block-size", 12, 24, 24, "--workers", 2,
                          "--progress", "none"])
    _wait_for_blocks(output, 2, process)
    family = [psutil.Process(process.pid)] + psutil.Process(process.pid).children(recursive=True)
    assert len(family) >= 3  # the CLI, the job, workers
    process.send_signal(signal.SIGTERM)
    # SIGTERM, then SIGKILL after a grace of 0.5 s (processes.stop); how long that takes
    # on a quiet machine is for benchmarks, here only that nothing is left
    process.wait(timeout=patience(5))
    assert wait_gone(family, 5) == []
    assert process.returncode == 130
    assert "resume" in process.stderr.read()
    assert zarr.open(str(output)).attrs[COMPLETE_ATTR] is False


@pytest.mark.parametrize("target, sig", [("job", signal.SIGINT), ("command", signal.SIGHUP)])
def test_a_signal_to_one_process_of_a_run_is_one_line(bigger, tmp_path, target, sig):
    """SIGINT to the job alone printed a traceback and 'exit code -2'; SIGHUP to the command
    alone (a lost ssh session) left the job running, silently. Either stops the run."""
    output = tmp_path / "out.zarr/labels"
    process = _start_cli(["segment", bigger, output, "--block-size", 12, 24, 24, "--workers", 2,
                          "--progress", "none"])
    _wait_for_blocks(output, 2, process)
    family = [psutil.Process(process.pid)] + psutil.Process(process.pid).children(recursive=True)
    job = next(p for p in family if "blockwise.job" in " ".join(p.cmdline()))
    (job if target == "job" else family[0]).send_signal(sig)
    _, stderr = process.communicate(timeout=patience(10))
    assert len(stderr.splitlines()) == 1 and "Traceback" not in stderr, stderr
    assert "resume" in stderr
    assert process.returncode == (1 if target == "job" else 130)
    assert wait_gone(family, 5) == []
    assert zarr.open(str(output)).attrs[COMPLETE_ATTR] is False


def test_a_run_under_nohup_outlives_sighup(bigger, tmp_path):
    """nohup ignores SIGHUP so that a run outlives its terminal: the run keeps it ignored."""
    output = tmp_path / "out.zarr/labels"
    process = subprocess.Popen(
        ["nohup", *CLI, "segment", str(bigger), str(output), "--block-size", "12", "24", "24",
         "--progress", "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, cwd=tmp_path)
    _wait_for_blocks(output, 2, process)
    process.send_signal(signal.SIGHUP)
    _, stderr = process.communicate(timeout=patience(60))
    assert process.returncode == 0, stderr
    assert zarr.open(str(output)).attrs[COMPLETE_ATTR] is True


def test_an_unwatched_run_stops_at_its_input_error(tmp_path, capfd):
    """Without the job's watchdog (``supervised=False``) the block's error ends the run:
    workers daisy starts afterwards still take blocks, rather than return at once and burn
    daisy's start budget one by one (36 s and 96 warnings for 32 blocks)."""
    affinities, _, offsets = sample_volume((24, 64, 128), seed=2)
    affinities[0, 5, 5, 5] = np.nan
    path = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    with pytest.raises(BlockwiseError, match="NaN"):
        segment_blockwise_zarr(path, tmp_path / "o.zarr/labels", PARAMS, block_size=(12, 32, 32),
                               progress="none", supervised=False)
    assert "start budget" not in capfd.readouterr().err


def test_a_cancelled_run_is_not_taken_for_a_failed_one(bigger, tmp_path):
    """Ctrl-C during ``segment_blockwise_zarr`` raises a KeyboardInterrupt: a script that
    skips failed settings with ``except Exception`` went on to the next one."""
    script = textwrap.dedent(f"""
        from napari_mutex_watershed.blockwise.launch import segment_blockwise_zarr
        for bias in (0.4, 0.5):
            try:
                segment_blockwise_zarr({str(bigger)!r}, {str(tmp_path)!r} + f"/{{bias}}.zarr",
                                       {{"bias": bias}}, block_size=(12, 24, 24),
                                       progress="none")
            except Exception as error:
                print("skipped", type(error).__name__, flush=True)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=_as_from_a_terminal)
    _wait_for_blocks(tmp_path / "0.4.zarr", 2, process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=patience(10))
    assert "skipped" not in stdout and "Cancelled" in stderr, stdout + stderr
    assert not (tmp_path / "0.5.zarr").exists()


def test_input_error_stops_the_run_at_once_at_its_voxel(tmp_path):
    affinities, _, offsets = sample_volume((24, 64, 64), seed=2)
    affinities[0, 23, 60, 60] = np.nan  # read by block (1, 1, 1) of 12 x 32 x 32 blocks only
    path = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    result = _run_cli(["segment", path, tmp_path / "in.zarr/labels", "--block-size", 12, 32, 32,
                       "--max-retries", 3, "--progress", "none"])
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    # (1, 1, 1) is an odd block: the even blocks ran and the run stopped at the odd step, with
    # the voxel in the input's own coordinates
    assert lines[0].startswith("error: odd step, block (1, 1, 1): affinities contain 1 NaN and "
                               "0 infinite values in channel 0, first at voxel (23, 60, 60)")
    # never retried: the block that met it held on until the run stopped, so it was tried
    # once (each try writes this line to its worker's log)
    logs = work_dir_for(tmp_path / "in.zarr/labels") / "logs"
    tries = [line for log in logs.rglob("*.err") for line in log.read_text().splitlines()
             if line.startswith("input error, the run stops: odd step, block (1, 1, 1)")]
    assert len(tries) == 1, tries


def test_no_worker_outlives_a_run_an_input_error_stopped(tmp_path):
    """daisy's scheduler starts new workers while the first are stopped: they outlived the
    run and wrote blocks after its error line (many blocks left: 128, the error in the
    even step)."""
    affinities, _, offsets = sample_volume((64, 128, 128), seed=2)
    affinities[2, 40, 70, 70] = np.nan  # read by even block (2, 1, 1) of 16 x 32 x 32
    path = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    result = _run_cli(["segment", path, tmp_path / "in.zarr/labels", "--block-size", 16, 32, 32,
                       "--progress", "none"])
    ended = time.time()
    assert result.returncode == 1 and "1 NaN" in result.stderr, result.stderr
    work_dir = work_dir_for(tmp_path / "in.zarr/labels")
    left = wait_gone([p for p in psutil.process_iter() if _serves(p, work_dir)], 2)
    assert not left, f"still running: {[p.pid for p in left]}"
    assert all(record.stat().st_mtime <= ended for record in (work_dir / "blocks").iterdir())


def _serves(process, work_dir) -> bool:
    """Does ``process`` work for the run whose folder is ``work_dir`` (in its command line
    or its environment, as daisy's workers)?"""
    try:
        text = " ".join(process.cmdline()) + " ".join(process.environ().values())
    except psutil.Error:
        return False
    return str(work_dir) in text


def test_worker_command_template(volume, tmp_path):
    path, affinities, _ = volume
    marker = tmp_path / "launched"
    template = f"touch {marker} && env MWS_LAUNCHED_BY_TEMPLATE=1 {{command}}"
    result = _run_cli(["segment", path, tmp_path / "o.zarr/labels", "--block-size", 12, 32, 32,
                       "--bias-short", 0.4, "--bias-long", 0.6, "--progress", "none",
                       "--worker-command", template])
    assert result.returncode == 0, result.stderr
    assert marker.exists()
    assert adapted_rand_error(segment(affinities, PARAMS), read(tmp_path / "o.zarr/labels"))[0] < 0.01


def test_roi_segments_a_sub_box_with_its_geometry(volume, tmp_path):
    path, affinities, _ = volume
    out = tmp_path / "o.zarr/labels"
    result = _run_cli(["segment", path, out, "--roi", 4, 8, 16, 16, 40, 40, "--block-size", 8, 20, 20,
                       "--bias-short", 0.4, "--bias-long", 0.6, "--progress", "none"])
    assert result.returncode == 0, result.stderr
    from funlib.persistence import open_ds

    labels = open_ds(str(out / "0"))  # level 0 of the OME-Zarr labels
    assert tuple(labels.roi.offset) == (4, 8, 16) and tuple(labels.roi.shape) == (16, 40, 40)
    crop = affinities[:, 4:20, 8:48, 16:56]
    assert adapted_rand_error(segment(crop, PARAMS), read(out))[0] < 0.01


def _processes_marked(marker: str) -> list[psutil.Process]:
    """Processes whose environment carries ``marker`` (inherited from the command we ran),
    so that other runs on a shared machine do not count."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("MWS_TEST_MARK") == marker:
                found.append(process)
        except psutil.Error:
            continue
    return found


def test_an_invalid_request_lets_the_early_job_process_go(tmp_path):
    # the CLI starts the job process before it validates; a refused request must end it
    marker = str(tmp_path)
    result = _run_cli(["segment", tmp_path / "missing.zarr/affinities", tmp_path / "o.zarr/labels",
                       "--progress", "none"], env={**os.environ, "MWS_TEST_MARK": marker})
    assert result.returncode == 1 and "does not exist" in result.stderr
    assert _processes_marked(marker) == []
