"""The command line: what a user reads when a run is complete, resumed, refused or broken.

The table of refusals is tests/test_bad_inputs.py; here are the other things it says.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr
from importtime import imported

from napari_mutex_watershed import WatershedParameters, cli, segment
from napari_mutex_watershed.attributes import PARAMETERS_ATTR
from napari_mutex_watershed.blockwise.fatal import LAUNCHES_FILE, LOG_FILE
from napari_mutex_watershed.blockwise.launch import work_dir_for
from napari_mutex_watershed.errors import InvalidInputError
from napari_mutex_watershed.parameters import DEFAULT_MIN_SIZE
from napari_mutex_watershed.storage import stored_parameters, write_affinities
from napari_mutex_watershed.synthetic import sample_volume

CLI = [sys.executable, "-m", "napari_mutex_watershed.cli"]
BLOCKS = ["--block-size", "12", "32", "32", "--progress", "none"]


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600,
                          **kwargs)


@pytest.fixture
def volume(tmp_path):
    affinities, _, offsets = sample_volume((24, 64, 64), seed=7)
    return write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets), affinities


@pytest.mark.slow
def test_a_rerun_says_already_complete_and_a_resume_what_it_reused(volume, tmp_path):
    path, affinities = volume
    output = tmp_path / "in.zarr/labels"
    # NaN in block (1, 1, 1) only, an odd block: the even step finishes, the odd one stops
    broken = zarr.open_array(str(path), mode="r+")
    broken[0, 23, 60, 60] = np.nan
    first = run("segment", path, output, *BLOCKS)
    assert first.returncode == 1 and "NaN" in first.stderr

    broken[0, 23, 60, 60] = affinities[0, 23, 60, 60]  # fixed in place: the same job
    second = run("segment", path, output, *BLOCKS)
    assert second.returncode == 0, second.stderr
    lines = second.stdout.splitlines()
    assert lines[0].startswith("resuming: ") and "(even 4/4, odd " in lines[0], lines
    reused = int(lines[0].split()[1])
    assert 4 <= reused < 8  # the even blocks at least, never (1, 1, 1) nor the relabel step

    third = run("segment", path, output, *BLOCKS)
    assert third.returncode == 0
    # its one line: nothing was written
    assert third.stdout.splitlines() == [f"already complete: {output} (nothing to do)"]

    # the input written anew at the same path: --overwrite recomputes the same job
    zarr.open_array(str(path), mode="r+")[...] = affinities[:, ::-1]
    fourth = run("segment", path, output, *BLOCKS, "--overwrite")
    assert fourth.returncode == 0 and "already complete" not in fourth.stdout
    fresh = run("segment", path, tmp_path / "fresh.zarr/labels", *BLOCKS)
    assert fresh.returncode == 0, fresh.stderr
    np.testing.assert_array_equal(zarr.open_array(str(output / "0"))[...],
                                  zarr.open_array(str(tmp_path / "fresh.zarr/labels/0"))[...])


@pytest.mark.slow
def test_after_a_run_refused_for_its_values_another_run_needs_no_overwrite(volume, tmp_path):
    """A NaN found while its one block is read: the run computed nothing, so the next run,
    with other settings once the input is fixed, replaces its output without --overwrite."""
    path, affinities = volume
    output = tmp_path / "o.zarr/labels"
    broken = zarr.open_array(str(path), mode="r+")
    broken[0, 3, 4, 5] = np.nan
    first = run("segment", path, output, "--progress", "none")
    assert first.returncode == 1 and "NaN" in first.stderr

    broken[0, 3, 4, 5] = affinities[0, 3, 4, 5]
    second = run("segment", path, output, "--bias", "0.4", "--progress", "none")
    assert second.returncode == 0, second.stderr
    parameters = stored_parameters(zarr.open_group(str(output)))
    assert parameters.bias == 0.4
    np.testing.assert_array_equal(zarr.open_array(str(output / "0"))[...],
                                  segment(zarr.open_array(str(path))[...], parameters))


@pytest.mark.slow
def test_a_failing_worker_command_stops_after_one_round(volume, tmp_path):
    path, _ = volume
    output = tmp_path / "o.zarr/labels"
    result = run("segment", path, output, *BLOCKS, "--workers", 2, "--max-retries", 2,
                 "--worker-command", "echo 'sbatch: error: invalid partition' >&2; exit 1; "
                 "{command}")
    assert result.returncode == 1
    assert "step even" in result.stderr and "invalid partition" in result.stderr
    launches = (work_dir_for(output) / LAUNCHES_FILE).read_text().splitlines()
    # (retries + 1) per worker slot, and at most one more from the other slot;
    # daisy alone would go on to (blocks x tries) = 24 launches
    assert 6 <= len(launches) <= 7
    assert all(json.loads(line)["code"] == 1 for line in launches)


def test_usage_mistakes_get_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["segment", "a.zarr"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: the following arguments are required: output (see napari-mutex-watershed "
        "segment --help)"]


def test_offsets_the_input_stores_hold_with_a_parameters_file_or_a_bias_each(tmp_path):
    """Neither a --params file that names no offsets nor a bias per offset puts the default
    offsets in place of those the input stores (a file once did, silently, when the input
    had as many channels as the defaults)."""
    affinities, _, _ = sample_volume((16, 32, 32), seed=3)
    own = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 0, 0), (0, 5, 0), (0, 0, 5)]
    six = write_affinities(tmp_path / "six.zarr/affinities", affinities, own)
    three = write_affinities(tmp_path / "three.zarr/affinities", affinities[:3], own[:3])
    (tmp_path / "p.json").write_text(json.dumps({"bias_short": 0.4}))
    for source, flags in ((six, ["--params", tmp_path / "p.json"]),
                          (three, ["--bias", "0.4", "0.5", "0.6"])):
        output = source.parent / "labels"
        assert cli.main(["segment", str(source), str(output), "--progress", "none",
                         *map(str, flags)]) == 0
        made = stored_parameters(zarr.open_group(str(output)))
        assert made.offsets == own[:len(made.offsets)] and len(made.offsets) in (3, 6)
        assert made.bias_short == 0.4 if source == six else made.bias == [0.4, 0.5, 0.6]


def test_biases_per_offset_given_as_flags_replace_a_file_s_uniform_bias(tmp_path):
    """A sweep's CSV row or the widget's Save after Apply sets ``bias``, which replaces the
    per-offset biases: given as flags over such a file, they were stored but not used."""
    args = cli.build_parser().parse_args(
        ["segment", "in.zarr", "out.zarr", "--params", str(tmp_path / "p.json"),
         "--bias-short", "0.2", "--bias-long", "0.9"])
    (tmp_path / "p.json").write_text(json.dumps({"bias": 0.5, "min_size": 3}))
    assert cli.parameters_from(args) == {"bias_short": 0.2, "bias_long": 0.9, "min_size": 3}
    args = cli.build_parser().parse_args(
        ["segment", "in.zarr", "out.zarr", "--params", str(tmp_path / "p.json"),
         "--bias", "0.3", "--bias-short", "0.2"])
    assert cli.parameters_from(args)["bias"] == 0.3  # a uniform bias given: it wins
    args = cli.build_parser().parse_args(  # one given: the file's bias for the other
        ["segment", "in.zarr", "out.zarr", "--params", str(tmp_path / "p.json"),
         "--bias-short", "0.2"])
    assert cli.parameters_from(args) == {"bias_short": 0.2, "bias_long": 0.5, "min_size": 3}
    (tmp_path / "p.json").write_text(json.dumps({"bias": [0.5] * 6}))
    with pytest.raises(InvalidInputError, match="sets a bias per offset, which --bias-short "
                       "and --bias-long cannot change: give --bias, or edit the file"):
        cli.parameters_from(args)


def test_debug_shows_the_traceback_of_a_refusal(tmp_path):
    quiet = run("segment", tmp_path / "none.zarr/affinities", tmp_path / "o.zarr")
    loud = run("--debug", "segment", tmp_path / "none.zarr/affinities", tmp_path / "o.zarr")
    assert quiet.returncode == loud.returncode == 1
    assert "Traceback" not in quiet.stderr and "Traceback" in loud.stderr
    assert quiet.stderr.splitlines()[-1] == loud.stderr.splitlines()[-1]


def test_debug_shows_the_job_s_log_on_the_terminal(volume, tmp_path):
    """Also from a job process started once the plan is saved (a small region of several
    blocks: the command starts none early)."""
    path, _ = volume
    quiet = run("segment", path, tmp_path / "quiet.zarr/labels", *BLOCKS)
    loud = run("--debug", "segment", path, tmp_path / "loud.zarr/labels", *BLOCKS)
    assert quiet.returncode == loud.returncode == 0, loud.stderr
    assert "finished: {" not in quiet.stderr and "finished: {" in loud.stderr


def test_an_unexpected_error_gets_one_line_and_a_log(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "command_sample", broken)
    assert cli.main(["sample", str(tmp_path / "s.zarr")]) == 1
    line, = capsys.readouterr().err.splitlines()
    assert line.startswith("error: unexpected KeyError: 'a bug' (details: ")
    log = line.split("(details: ")[1].rstrip(")")
    assert log.startswith(str(tmp_path)) and "Traceback" in open(log).read()


def test_a_disk_full_before_a_run_starts_is_one_line_and_leaves_nothing(
        volume, monkeypatch, capsys, tmp_path):
    """The lock is the first thing a run writes: a full disk there was 'unexpected OSError'
    and left the lock file (and the sample's writes the same)."""
    path, _ = volume
    real_pwrite = os.pwrite

    def full(fd, data, offset):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".lock"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full)
    assert cli.main(["segment", str(path), str(tmp_path / "o.zarr/labels")]) == 1
    line, = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: no space left on device at {tmp_path}") and (
        "free some space, then run the same command again" in line), line
    assert [p.name for p in tmp_path.iterdir()] == ["in.zarr"]  # no lock, no work folder
    # a sample's writes too
    monkeypatch.setattr(os, "pwrite", real_pwrite)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "s.zarr"))

    monkeypatch.setattr("napari_mutex_watershed.synthetic.write_sample", full_disk)
    assert cli.main(["sample", str(tmp_path / "s.zarr")]) == 1
    line, = capsys.readouterr().err.splitlines()
    assert line == (f"error: no space left on device at {tmp_path / 's.zarr'}: free some "
                    "space, then run the same command again")


def test_sample_overwrites_only_a_sample(tmp_path):
    assert run("sample", tmp_path / "s.zarr", "--shape", 16, 32, 32).returncode == 0
    assert run("sample", tmp_path / "s.zarr", "--shape", 16, 32, 32,
               "--overwrite").returncode == 0
    foreign = zarr.open_array(str(tmp_path / "s.zarr/ground_truth"), mode="r+")
    foreign.attrs.clear()
    foreign[0, 0, 0] = 12345
    for flags in ((), ("--overwrite",)):  # not "pass --overwrite" first, then a refusal
        refused = run("sample", tmp_path / "s.zarr", "--shape", 16, 32, 32, *flags)
        assert refused.returncode == 1
        assert refused.stderr.strip().endswith(
            "ground_truth exists and is not sample data, the only thing `sample` replaces: "
            "write the sample into another container")
    assert zarr.open_array(str(tmp_path / "s.zarr/ground_truth"))[0, 0, 0] == 12345
    # a run's labels where the ground truth goes: refused, with or without --overwrite,
    # before anything is written (affinities were written first, then refused by --overwrite)
    assert run("segment", tmp_path / "s.zarr/affinities", tmp_path / "t.zarr/ground_truth",
               "--progress", "none").returncode == 0
    for flags in ((), ("--overwrite",)):
        refused = run("sample", tmp_path / "t.zarr", "--shape", 16, 32, 32, *flags)
        assert refused.returncode == 1 and "is not sample data" in refused.stderr
        assert not (tmp_path / "t.zarr/affinities").exists()
    # a link where an array goes: one line (it was an unexpected OSError from rmtree)
    (tmp_path / "empty").mkdir()
    (tmp_path / "u.zarr").mkdir()
    (tmp_path / "u.zarr/affinities").symlink_to(tmp_path / "empty")
    refused = run("sample", tmp_path / "u.zarr", "--shape", 16, 32, 32, "--overwrite")
    assert refused.returncode == 1 and refused.stderr.strip().endswith(
        "affinities is a link, which `sample` never replaces: write the sample into another "
        "container")


def test_the_default_min_size_applies_and_zero_keeps_every_segment(volume, tmp_path):
    """The CLI and the model share one default: no segment under it, and it is recorded."""
    path, _ = volume
    counts = {}
    for name, extra in (("default", []), ("zero", ["--min-size", "0"])):
        output = tmp_path / f"in.zarr/{name}"
        result = run("segment", path, output, "--progress", "none", *extra)
        assert result.returncode == 0, result.stderr
        level0 = zarr.open_array(str(output / "0"), mode="r")
        stored = WatershedParameters.model_validate(level0.attrs[PARAMETERS_ATTR])
        sizes = np.bincount(np.asarray(level0[:]).ravel())[1:]
        counts[name] = sizes[sizes > 0]
        assert stored.min_size == (DEFAULT_MIN_SIZE if name == "default" else 0)
    assert counts["default"].min() >= DEFAULT_MIN_SIZE
    assert counts["zero"].min() < DEFAULT_MIN_SIZE and len(counts["zero"]) > len(counts["default"])


#: What a run of one block must not import, in the command's process or the job's: funlib's
#: arrays with dask, xarray and pandas (about 0.5 s; the checks read the input without them),
#: and the steps of a run of several blocks (scipy's graphs for the stitch).
NOT_FOR_ONE_BLOCK = ("dask", "xarray", "pandas", "funlib.persistence", "scipy",
                     "napari_mutex_watershed.blockwise.stitch",
                     "napari_mutex_watershed.blockwise.even_blocks")


@pytest.mark.parametrize("shape, processes", [((24, 64, 64), 1), ((8, 184, 184), 2)])
def test_a_one_block_run_imports_only_what_one_block_needs(shape, processes, tmp_path):
    """``segment`` on a small input (one block, no workers), in the command's process alone
    or also in its job process (above ``QUICK_REGION_VOXELS``); their imports are most of the
    time a small input takes beyond one kernel call."""
    affinities, _, offsets = sample_volume(shape, seed=7)
    path = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    output = tmp_path / "in.zarr/labels"
    result = run("segment", path, output, "--progress", "none",
                 env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    # the job's imports after its start-up go to its log (stderr points there)
    log = work_dir_for(output) / LOG_FILE
    modules = imported(result.stderr) + (imported(log.read_text()) if processes == 2 else [])
    assert modules.count("zarr") == processes  # the lines of every process are here
    loaded = sorted(m for m in modules
                    if any(m == name or m.startswith(f"{name}.") for name in NOT_FOR_ONE_BLOCK))
    assert loaded == []


def test_the_command_starts_its_job_before_importing_numpy():
    """``segment`` starts the job process first, so the job's imports overlap ours."""
    probe = ("import sys; import napari_mutex_watershed.cli; "
             "import napari_mutex_watershed.blockwise.supervise; "
             "print(sorted({'numpy', 'pydantic', 'zarr'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
