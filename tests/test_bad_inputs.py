"""Bad inputs through the real CLI: each gets one clear line, exit code 1 or 2, and loses
nothing (every file that was there before is there after, unchanged).

One row per case: how to make it, the command, and the line it must get. The closing count
(tried, refused with one line, damaged) is what ``test_every_case_is_refused_...`` asserts.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import zarr

from napari_mutex_watershed.storage import write_affinities, write_labels
from napari_mutex_watershed.synthetic import sample_volume, write_sample

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "napari_mutex_watershed.cli"]
SHAPE = (16, 32, 32)
BLOCKS = ["--block-size", "16", "16", "16", "--progress", "none"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A container with affinities and ground truth, copied by each case."""
    affinities, truth, offsets = sample_volume(SHAPE, seed=4)
    folder = tmp_path_factory.mktemp("clean")
    write_affinities(folder / "in.zarr/affinities", affinities, offsets)
    write_labels(folder / "in.zarr/ground_truth", truth)
    return folder


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def set_channel_value(folder, channel, voxel, value):
    array = zarr.open_array(str(folder / "in.zarr/affinities"), mode="r+")
    array[(channel, *voxel)] = value


def set_attribute(folder, name, value):
    zarr.open_array(str(folder / "in.zarr/affinities"), mode="r+").attrs[name] = value


def corrupt_chunk(folder):
    chunk = next(p for p in sorted((folder / "in.zarr/affinities").rglob("*"))
                 if p.is_file() and "zarr.json" not in p.name)
    chunk.write_bytes(b"not a compressed chunk")
    return chunk


def small_volume(folder):
    affinities, _, offsets = sample_volume((8, 8, 8), seed=1)
    write_affinities(folder / "small.zarr/affinities", affinities, offsets)


def nested_input(folder):
    affinities, _, offsets = sample_volume(SHAPE, seed=1)
    write_affinities(folder / "n.zarr/group/affinities", affinities, offsets)


def nearest_neighbours_only(folder):
    """Three channels and nothing that says which offsets they are."""
    affinities, _, offsets = sample_volume(SHAPE, seed=1)
    path = write_affinities(folder / "nn.zarr/affinities", affinities[:3], offsets[:3])
    del zarr.open_array(str(path), mode="r+").attrs["offsets"]


def earlier_output(folder):
    done = cli(*SEGMENT, "o.zarr/labels", "--progress", "none", cwd=folder)
    assert done.returncode == 0, done.stderr


def an_export(folder):
    """A Labels layer saved with the plugin's writer (labels proofread by hand, say)."""
    from napari_mutex_watershed.gui.writer import write_labels_zarr

    write_labels_zarr(str(folder / "proof.zarr"), np.ones(SHAPE[1:], np.uint32),
                      {"name": "curated", "scale": (1, 1, 1), "translate": (0, 0, 0)})


def note_in_earlier_output(folder):
    earlier_output(folder)
    (folder / "o.zarr/labels/notes.csv").write_text("kept")


def truth_without_offset(folder):
    """A crop of ground truth that stores its voxel size but no offset (one that stores its
    offset is placed there, and scored where it lies)."""
    truth = zarr.create_array(str(folder / "gt.zarr/ground_truth"),
                              data=np.ones((16, 32, 16), np.uint32))
    truth.attrs["resolution"] = [1, 1, 1]


def ome_image(path, nan=False):
    """An OME-Zarr 0.5 affinities image (one level, offsets stored), a NaN in it if asked."""
    affinities, _, offsets = sample_volume(SHAPE, seed=1)
    if nan:
        affinities[2, 3, 4, 5] = np.nan
    root = zarr.open_group(str(path), mode="w")
    root.create_array("s0", data=affinities, chunks=affinities.shape)
    root.attrs["offsets"] = [list(o) for o in offsets]
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "c", "type": "channel"}] + [{"name": n, "type": "space"}
                                                      for n in "zyx"],
        "datasets": [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [1, 1, 1, 1]}]}]}]}


def foreign_folder(folder):
    (folder / "in.zarr/notes").mkdir()
    (folder / "in.zarr/notes/readme.txt").write_text("mine")


def write_file(name, text):
    def make(folder):
        (folder / name).write_text(text)
    return make


def float_volume_with(values):
    def make(folder):
        affinities, _, offsets = sample_volume(SHAPE, seed=1)
        affinities[values[0]] = values[1]
        write_affinities(folder / "in.zarr/affinities", affinities, offsets, overwrite=True)
    return make


def one_voxel(voxel, value, dtype):
    array = np.zeros(SHAPE, dtype)
    array[voxel] = value
    return array


@dataclass
class Case:
    name: str
    args: list
    line: str  # regex the one line must match (after "error: ")
    make: Callable | None = None
    code: int = 1


SEGMENT = ["segment", "in.zarr/affinities"]
SWEEP = ["sweep", "in.zarr/affinities", "--gt", "in.zarr/ground_truth"]
CASES = [
    # never delete or overwrite what is not ours
    Case("output is the input", [*SEGMENT, "in.zarr/affinities", "--overwrite"],
         r"the output in.zarr/affinities is the input"),
    Case("output inside the input", [*SEGMENT, "in.zarr/affinities/labels", "--overwrite"],
         r"lies inside the input"),
    Case("output contains the input", ["segment", "n.zarr/group/affinities", "n.zarr/group",
                                       "--overwrite"],
         r"contains the input", make=nested_input),
    Case("output is a foreign array", [*SEGMENT, "in.zarr/ground_truth", "--overwrite"],
         r"in.zarr/ground_truth exists and is not an output of napari-mutex-watershed"),
    Case("output is sample data", [*SEGMENT, "s.zarr/ground_truth", "--overwrite"],
         r"^error: s.zarr/ground_truth is sample data: only `napari-mutex-watershed sample "
         r"--overwrite` replaces it; choose another output$",
         make=lambda folder: write_sample(folder / "s.zarr", SHAPE[1:])),
    Case("output is an exported layer", [*SEGMENT, "proof.zarr/curated", "--overwrite"],
         r"^error: proof.zarr/curated is a layer exported from napari \(labels that may have "
         r"been edited by hand\): only another export of a layer replaces it; choose another "
         r"output$", make=an_export),
    Case("output holds a file beside its levels", [*SEGMENT, "o.zarr/labels", "--overwrite"],
         r"^error: o.zarr/labels holds notes.csv beside its levels, so it is never replaced: "
         r"move it elsewhere, or choose another output$", make=note_in_earlier_output),
    Case("an earlier output, other settings", [*SEGMENT, "o.zarr/labels", "--bias", 0.3],
         r"^error: \S*o.zarr/labels already exists \(from another run or with other settings\); "
         r"pass --overwrite to replace it$", make=earlier_output),
    Case("output under a file", [*SEGMENT, "in.zarr/notes.txt/labels"],
         r"^error: cannot write in.zarr/notes.txt/labels: \S*in.zarr/notes.txt is a file, not a "
         r"folder$", make=write_file("in.zarr/notes.txt", "mine")),
    Case("output is a level of an earlier output", [*SEGMENT, "o.zarr/labels/0", "--overwrite"],
         r"the output o.zarr/labels/0 is a level of the OME-Zarr image o.zarr/labels: name the "
         r"labels image itself \(o.zarr/labels\), or another output$", make=earlier_output),
    Case("output is a level of an image", [*SEGMENT, "image.zarr/s0", "--overwrite"],
         r"^error: the output image.zarr/s0 is a level of the OME-Zarr image image.zarr: write "
         r"into its labels group \(image.zarr/labels/<name>\)$",
         make=lambda folder: ome_image(folder / "image.zarr")),
    Case("output is an image", [*SEGMENT, "image.zarr", "--overwrite"],
         r"^error: the output image.zarr is an OME-Zarr image, which is never replaced: write "
         r"its labels into its labels group \(image.zarr/labels/<name>\)$",
         make=lambda folder: ome_image(folder / "image.zarr")),
    Case("output inside an earlier output", [*SEGMENT, "o.zarr/labels/inner"],
         r"^error: the output o.zarr/labels/inner lies inside the labels image o.zarr/labels, "
         r"which it would break: choose a place outside it$", make=earlier_output),
    Case("output is an image's labels group", ["segment", "image.zarr", "image.zarr/labels"],
         r"^error: the output image.zarr/labels is the labels group of the OME-Zarr image "
         r"image.zarr, which lists the image's labels: write into it \(image.zarr/labels/"
         r"<name>\)$", make=lambda folder: ome_image(folder / "image.zarr")),
    Case("output is an image's labels group, spelled around", [
        "segment", "image.zarr", "image.zarr/other/../labels"],
         r"^error: the output image.zarr/other/../labels is the labels group of the OME-Zarr "
         r"image image.zarr", make=lambda folder: ome_image(folder / "image.zarr")),
    Case("output is a foreign folder", [*SEGMENT, "in.zarr/notes", "--overwrite"],
         r"in.zarr/notes exists and is not an output", make=foreign_folder),
    # shapes and offsets, before any worker starts
    Case("volume shorter than an offset", ["segment", "small.zarr/affinities", "o.zarr/labels"],
         r"region \(8, 8, 8\) is not longer than offset \(0, 9, 0\)", make=small_volume),
    Case("offset longer than the volume", [*SEGMENT, "o.zarr/labels", "--offsets",
                                           "1,0,0 0,1,0 0,0,1 3,0,0 0,40,0 0,0,9"],
         r"not longer than offset \(0, 40, 0\) along axis 1"),
    Case("fractional offsets flag", [*SEGMENT, "o.zarr/labels", "--offsets", "1.5,0,0"],
         r"argument --offsets: offsets look like", code=2),
    Case("fractional offsets attribute", [*SEGMENT, "o.zarr/labels"],
         r"offsets.*(integer|fractional)",
         make=lambda f: set_attribute(f, "offsets", [[1.5, 0, 0], [0, 1, 0], [0, 0, 1],
                                                     [3, 0, 0], [0, 9, 0], [0, 0, 9]])),
    Case("malformed offsets attribute", [*SEGMENT, "o.zarr/labels"], r"offsets",
         make=lambda f: set_attribute(f, "offsets", "one two three")),
    Case("three channels and no offsets", ["segment", "nn.zarr/affinities", "o.zarr/labels"],
         r"nn.zarr/affinities has 3 channels but stores no offsets, and the 3D defaults are "
         r"6: give one offset per channel \(e.g. 1,0,0 0,1,0 0,0,1 for nearest neighbours\), "
         r"or select channels",
         make=nearest_neighbours_only),
    Case("no array at the path", ["segment", "in.zarr/affs", "o.zarr/labels"],
         r"no affinities at in.zarr/affs: the path does not exist; in.zarr holds affinities, "
         r"ground_truth"),
    Case("no input container", ["segment", "none.zarr", "o.zarr/labels"],
         r"^error: no affinities at none.zarr: the path does not exist$"),
    Case("no mask container", [*SEGMENT, "o.zarr/labels", "--mask", "none.zarr"],
         r"^error: no mask at none.zarr: the path does not exist$"),
    Case("no seeds in the container", [*SEGMENT, "o.zarr/labels", "--seeds", "in.zarr"],
         r"no seeds at in.zarr/seeds: the path does not exist; in.zarr holds affinities, "
         r"ground_truth"),
    Case("roi outside the volume", [*SEGMENT, "o.zarr/labels", "--roi", 0, 0, 0, 16, 32, 64],
         r"roi \(0, 0, 0\) \+ \(16, 32, 64\) is not inside the volume"),
    Case("block size of the wrong length", [*SEGMENT, "o.zarr/labels", "--block-size", 16, 16],
         r"block size must be 3 integers"),
    # values, found per block and never retried
    Case("NaN", [*SEGMENT, "o.zarr/labels", *BLOCKS, "--max-retries", 3],
         r"block \(0, 1, 1\): affinities contain 1 NaN and 0 infinite values in channel 2, "
         r"first at voxel \(10, 20, 30\)",
         make=lambda f: set_channel_value(f, 2, (10, 20, 30), np.nan)),
    Case("infinity", [*SEGMENT, "o.zarr/labels", *BLOCKS],
         r"0 NaN and 1 infinite values in channel 0, first at voxel \(3, 4, 5\).*; replace "
         r"them \(with 0, say\) before segmenting: a mask does not skip them",
         make=lambda f: set_channel_value(f, 0, (3, 4, 5), np.inf)),
    Case("values above 1", [*SEGMENT, "o.zarr/labels", *BLOCKS],
         r"values outside 0..1 \(from .* to 7\) in channel 5, first at voxel \(1, 2, 3\); "
         r"affinities are probabilities", make=lambda f: set_channel_value(f, 5, (1, 2, 3), 7.0)),
    Case("corrupted chunk", [*SEGMENT, "o.zarr/labels", *BLOCKS],
         r"cannot read chunk \(0, 0, 0, 0\) of .*in.zarr/affinities", make=corrupt_chunk),
    # parameters files
    Case("params file missing", [*SEGMENT, "o.zarr/labels", "--params", "nope.json"],
         r"parameters file nope.json does not exist"),
    Case("params file of null", [*SEGMENT, "o.zarr/labels", "--params", "p.json"],
         r"parameters file p.json holds no parameters", make=write_file("p.json", "null")),
    Case("params file is a folder", [*SEGMENT, "o.zarr/labels", "--params", "in.zarr"],
         r"parameters file in.zarr is a folder"),
    Case("params file broken JSON", [*SEGMENT, "o.zarr/labels", "--params", "p.json"],
         r"parameters file p.json is not valid JSON", make=write_file("p.json", "{bias: 0.5")),
    Case("params file YAML without its suffix", [*SEGMENT, "o.zarr/labels", "--params", "p.txt"],
         r"not valid JSON .*\.yaml or \.yml", make=write_file("p.txt", "bias_short: 0.4\n")),
    Case("params file broken YAML", [*SEGMENT, "o.zarr/labels", "--params", "p.yaml"],
         r"parameters file p.yaml is not valid YAML",
         make=write_file("p.yaml", "bias_short: [0.4\n")),
    Case("params file bad value", [*SEGMENT, "o.zarr/labels", "--params", "p.json"],
         r"invalid parameters file p.json: bias_short: Input should be less than or equal to 1",
         make=write_file("p.json", json.dumps({"bias_short": 4}))),
    Case("params file unknown field", [*SEGMENT, "o.zarr/labels", "--params", "p.json"],
         r"invalid parameters file p.json: biass: not a parameter \(did you mean bias\?\)",
         make=write_file("p.json", json.dumps({"biass": 0.5}))),
    # flags
    Case("negative retries", [*SEGMENT, "o.zarr/labels", "--max-retries", -1],
         r"argument --max-retries: -1 is below 0", code=2),
    Case("negative timeout", [*SEGMENT, "o.zarr/labels", "--timeout", -5],
         r"argument --timeout: -5 is below 0", code=2),
    Case("zero workers", [*SEGMENT, "o.zarr/labels", "--workers", 0],
         r"argument --workers: 0 is below 1", code=2),
    Case("bias out of range", [*SEGMENT, "o.zarr/labels", "--bias-short", 2],
         r"bias_short: Input should be less than or equal to 1"),
    Case("worker command without {command}", [*SEGMENT, "o.zarr/labels",
                                              "--worker-command", "sbatch --wait"],
         r"needs \{command\}"),
    Case("worker command that always fails", [*SEGMENT, "o.zarr/labels", *BLOCKS,
                                              "--worker-command", "echo no cluster here >&2; "
                                              "exit 3; {command}"],
         r"worker command failed \d+ times in a row in step even: `echo no cluster.*` exited "
         r"with code 3: no cluster here"),
    # inputs that are not affinities
    Case("input missing", ["segment", "none.zarr/affinities", "o.zarr/labels"],
         r"none.zarr/affinities"),
    Case("input not in a container", ["segment", "in.txt", "o.zarr/labels"],
         r"in.txt", make=write_file("in.txt", "x")),
    Case("zero voxel size", [*SEGMENT, "o.zarr/labels"], r"voxel size",
         make=lambda f: set_attribute(f, "voxel_size", [0, 1, 1])),
    # mask and seeds (--mask, --seeds): checked against the affinities before any worker
    Case("mask of another shape", [*SEGMENT, "o.zarr/labels", "--mask", "m.zarr/mask"],
         r"the mask .*m.zarr/mask has shape \(16, 32, 16\) but the affinities \(16, 32, 32\)",
         make=lambda f: write_labels(f / "m.zarr/mask", np.ones((16, 32, 16), np.uint8))),
    Case("mask on another voxel grid", [*SEGMENT, "o.zarr/labels", "--mask", "m.zarr/mask"],
         r"the mask .* has voxel size \(8, 8, 8\) and offset \(0, 0, 0\), the affinities "
         r"\(1, 1, 1\) .*: they must share one voxel grid",
         make=lambda f: write_labels(f / "m.zarr/mask", np.ones(SHAPE, np.uint8),
                                     voxel_size=(8, 8, 8))),
    Case("seeds of floats", [*SEGMENT, "o.zarr/labels", "--seeds", "s.zarr/seeds"],
         r"the seeds .*s.zarr/seeds have dtype float32: seeds are integer ids",
         make=lambda f: write_labels(f / "s.zarr/seeds", np.ones(SHAPE, np.float32))),
    Case("seeds missing", [*SEGMENT, "o.zarr/labels", "--seeds", "s.zarr/seeds"],
         r"no seeds at s.zarr/seeds: the path does not exist"),
    Case("negative seed id", [*SEGMENT, "o.zarr/labels", *BLOCKS, "--seeds", "s.zarr/seeds"],
         r"the seeds hold a negative id, first at voxel \(2, 20, 3\)",
         make=lambda f: write_labels(f / "s.zarr/seeds", one_voxel((2, 20, 3), -1, np.int32))),
    Case("output is the mask", [*SEGMENT, "m.zarr/mask", "--mask", "m.zarr/mask",
                                "--overwrite"],
         r"the output m.zarr/mask is the mask",
         make=lambda f: write_labels(f / "m.zarr/mask", np.ones(SHAPE, np.uint8))),
    # sweep
    Case("sweep ground truth of another shape, no offset stored",
         ["sweep", "in.zarr/affinities", "--gt", "gt.zarr/ground_truth"],
         r"ground truth has shape \(16, 32, 16\) but the affinities \(16, 32, 32\)",
         make=truth_without_offset),
    Case("sweep table onto the input's metadata",
         [*SWEEP, "--csv", "in.zarr/affinities/zarr.json"],
         r"the output in.zarr/affinities/zarr.json lies inside the input"),
    Case("sweep table onto a file it did not write", [*SWEEP, "--csv", "notes.txt"],
         r"notes.txt exists and is not a table written by a sweep, so it is never replaced",
         make=write_file("notes.txt", "my notes\n")),
    Case("sweep table in a missing folder", [*SWEEP, "--csv", "nowhere/t.csv"],
         r"cannot write nowhere/t.csv: the folder nowhere does not exist"),
    Case("sweep table is a folder", [*SWEEP, "--csv", "."],
         r"the table goes to a file, and . is a folder"),
    Case("sweep ground truth of floats", [*SWEEP[:-2], "--gt", "gt.zarr/ground_truth"],
         r"the ground truth gt.zarr/ground_truth has dtype float32: ground truth holds "
         r"integer ids",
         make=lambda f: write_labels(f / "gt.zarr/ground_truth", np.ones(SHAPE, np.float32))),
    Case("sweep ground truth of single voxels", [*SWEEP[:-2], "--gt", "gt.zarr/ground_truth"],
         r"no object of the ground truth has two voxels",
         make=lambda f: write_labels(f / "gt.zarr/ground_truth",
                                     one_voxel((2, 3, 4), 7, np.uint32))),
    Case("sweep NaN, in the input's voxels under --roi", [*SWEEP, "--roi", 2, 2, 2, 8, 16, 16],
         r"affinities contain 1 NaN and 0 infinite values in channel 2, first at voxel "
         r"\(3, 4, 5\)",
         make=lambda f: set_channel_value(f, 2, (3, 4, 5), np.nan)),
    Case("sweep keeps the file's bias, with nothing else to sweep",
         [*SWEEP[:-2], "--gt", "in.zarr/ground_truth", "--params", "p.json"],
         r"the parameters file sets the bias, which the sweep keeps: give threshold or min size",
         make=write_file("p.json", '{"bias": 0.5}')),
    # sample
    Case("sample with a negative seed", ["sample", "new.zarr", "--seed", -1],
         r"argument --seed: -1 is below 0", code=2),
    Case("sample too large for memory", ["sample", "new.zarr", "--shape", 2000, 2000, 2000],
         r"a sample is made in memory: at most 2\*\*27 voxels"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_one_line_and_loses_nothing(case, clean, tmp_path):
    shutil.copytree(clean, tmp_path, dirs_exist_ok=True)
    if case.make is not None:
        case.make(tmp_path)
    before = fingerprint(tmp_path)
    work_folders = set(tmp_path.glob("*.mutex_watershed"))  # an earlier output's
    result = cli(*case.args, cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == case.code, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    assert re.search(case.line, lines[0]), lines[0]
    after = fingerprint(tmp_path)
    lost = {name for name, digest in before.items() if after.get(name) != digest
            and not (name.endswith(".lock") and name in after)}  # (it names its last holder)
    assert not lost, f"changed or deleted: {sorted(lost)}"
    if "(log: " not in lines[0]:  # refused before a job started: nothing left behind either
        assert not set(after) - set(before), sorted(set(after) - set(before))
        assert set(tmp_path.glob("*.mutex_watershed")) == work_folders


def test_a_run_refused_for_its_values_lists_no_label_on_the_image(tmp_path):
    """An image's labels group lists labels once they are complete: a run refused for a NaN
    left an empty label listed with the image, which OME viewers then showed."""
    ome_image(tmp_path / "image.zarr", nan=True)
    result = cli("segment", "image.zarr", "image.zarr/labels/mws", cwd=tmp_path)
    assert result.returncode == 1 and "contain 1 NaN" in result.stderr, result.stderr
    listed = zarr.open_group(str(tmp_path / "image.zarr/labels")).attrs.get("ome", {})
    assert "mws" not in listed.get("labels", []), listed
    ome_image(tmp_path / "image.zarr")  # fixed: the same command lists it
    result = cli("segment", "image.zarr", "image.zarr/labels/mws", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = zarr.open_group(str(tmp_path / "image.zarr/labels")).attrs["ome"]["labels"]
    assert listed == ["mws"]
    # replaced by a run refused again: no longer listed while it holds nothing
    source = zarr.open_array(str(tmp_path / "image.zarr/s0"), mode="r+")
    source[2, 3, 4, 5] = np.nan
    result = cli("segment", "image.zarr", "image.zarr/labels/mws", "--overwrite", cwd=tmp_path)
    assert result.returncode == 1 and "contain 1 NaN" in result.stderr, result.stderr
    listed = zarr.open_group(str(tmp_path / "image.zarr/labels")).attrs["ome"]
    assert listed.get("labels") == [], listed
