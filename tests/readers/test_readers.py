"""The OME-Zarr labels a run writes, opened by the readers of the field (issue 20):
ome-zarr-py, ome-zarr-models, napari-ome-zarr's reader, tensorstore, funlib.persistence and
zarr-python 2; and the pyramid itself (label-preserving, blockwise, resumable)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.attributes import COMPLETE_ATTR, PARAMETERS_ATTR
from napari_mutex_watershed.blockwise.pyramid import downsample_mode
from napari_mutex_watershed.errors import InvalidInputError
from napari_mutex_watershed.storage import pyramid_factors, write_affinities

from .conftest import BLOCK, LEVELS, OFFSET, SCALES, VOXEL, run_segment

pytestmark = pytest.mark.slow
FORMATS = ["v3", "v2"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_ome_zarr_py_finds_the_labels_node_and_its_multiscales(result, fmt):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    (node,) = list(Reader(parse_url(str(result[fmt])))())
    assert node.load(Label) is not None and node.load(Multiscales) is not None
    assert [tuple(d.shape) for d in node.data] == LEVELS
    assert [a["name"] for a in node.metadata["axes"]] == ["z", "y", "x"]
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    assert [tuple(s) for s in scales] == SCALES
    assert node.data[0].dtype == np.uint32


@pytest.mark.parametrize("fmt", FORMATS)
def test_ome_zarr_models_validates_an_image_label(result, fmt):
    from ome_zarr_models import open_ome_zarr

    model = open_ome_zarr(str(result[fmt]))
    assert type(model).__name__ == "ImageLabel"
    assert type(model).__module__.startswith(
        "ome_zarr_models.v05" if fmt == "v3" else "ome_zarr_models.v04")


@pytest.mark.parametrize("fmt", FORMATS)
def test_napari_ome_zarr_opens_multiscale_labels(result, fmt):
    from napari_ome_zarr import napari_get_reader

    reader = napari_get_reader(str(result[fmt]))
    assert callable(reader)
    ((data, kwargs, kind),) = reader(str(result[fmt]))
    assert kind == "labels"
    assert [tuple(level.shape) for level in data] == LEVELS
    assert tuple(kwargs["scale"]) == VOXEL


def test_tensorstore_sees_axis_names_on_every_level(result):
    import tensorstore as ts

    for i, shape in enumerate(LEVELS):
        store = ts.open({"driver": "zarr3", "kvstore": {
            "driver": "file", "path": str(result["v3"] / str(i))}}).result()
        assert store.domain.labels == ("z", "y", "x")
        assert tuple(store.shape) == shape and store.dtype == ts.uint32


@pytest.mark.parametrize("fmt", FORMATS)
def test_funlib_open_ds_on_level_0(result, fmt):
    from funlib.persistence import open_ds

    labels = open_ds(str(result[fmt] / "0"))
    assert tuple(labels.voxel_size) == VOXEL and tuple(labels.offset) == OFFSET
    assert list(labels.axis_names) == ["z", "y", "x"] and list(labels.units) == ["nm"] * 3
    assert labels.attrs[COMPLETE_ATTR] is True
    WatershedParameters.model_validate(labels.attrs[PARAMETERS_ATTR])
    # the parameters and the complete flag are on the group too (OME readers, napari)
    group = zarr.open_group(str(result[fmt]), mode="r")
    assert group.attrs[COMPLETE_ATTR] is True and PARAMETERS_ATTR in group.attrs


@pytest.mark.parametrize("fmt", FORMATS)
def test_pyramid_levels_are_the_mode_of_the_level_above(result, fmt):
    group = zarr.open_group(str(result[fmt]), mode="r")
    levels = [group[str(i)][:] for i in range(len(LEVELS))]
    assert [level.shape for level in levels] == LEVELS
    assert [group[str(i)].chunks for i in range(len(LEVELS))] == [
        tuple(min(b, s) for b, s in zip(BLOCK, shape)) for shape in LEVELS]
    for above, below, (a, b) in zip(levels, levels[1:], zip(SCALES, SCALES[1:])):
        step = tuple(y // x for x, y in zip(a, b))
        np.testing.assert_array_equal(below, downsample_mode(above, step))
        assert set(np.unique(below)) <= set(np.unique(above))  # no new ids


def test_downsample_mode_keeps_the_majority_and_handles_edges():
    data = np.array([[1, 1, 2, 2, 3], [1, 5, 2, 2, 3], [4, 4, 0, 0, 7]], np.uint32)
    np.testing.assert_array_equal(downsample_mode(data, (2, 2)), [[1, 2, 3], [4, 0, 7]])
    np.testing.assert_array_equal(downsample_mode(data, (1, 2)), [[1, 2, 3], [1, 2, 3],
                                                                  [4, 0, 7]])


def test_downsample_mode_equals_the_mode_of_every_window():
    """Against a count per window (the first voxel wins a tie), on few labels so ties and
    partial windows are common."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4, (9, 10, 7), dtype=np.uint32)
    for step in [(2, 2, 2), (1, 2, 2), (3, 1, 2)]:
        padded = np.pad(data, [(0, -n % s) for n, s in zip(data.shape, step)], mode="edge")
        expected = np.zeros([n // s for n, s in zip(padded.shape, step)], np.uint32)
        for index in np.ndindex(*expected.shape):
            window = padded[tuple(slice(i * s, (i + 1) * s) for i, s in zip(index, step))]
            values = list(window.ravel())
            expected[index] = max(values, key=lambda v: (values.count(v), -values.index(v)))
        np.testing.assert_array_equal(downsample_mode(data, step), expected)


def test_downsample_mode_leaves_its_input_as_it_was():
    """One window: its voxels' copies would otherwise be views of the input (an axis of one
    is contiguous whatever its stride), and the mode is written into the first."""
    data = np.full((2, 2, 2), 2, np.uint32)
    data[0, 0, 0] = 1
    before = data.copy()
    np.testing.assert_array_equal(downsample_mode(data, (2, 2, 2)), [[[2]]])
    np.testing.assert_array_equal(data, before)


def test_pyramid_factors_halve_finer_axes_first():
    assert pyramid_factors((24, 96, 96), (8, 4, 4), (12, 32, 32)) == [
        (1, 1, 1), (1, 2, 2), (2, 4, 4)]
    assert pyramid_factors((40, 512, 512), (40, 4, 4), (20, 64, 64)) == [
        (1, 1, 1), (1, 2, 2), (1, 4, 4), (1, 8, 8), (2, 16, 16)]
    assert pyramid_factors((8, 8), (1, 1), (8, 8)) == [(1, 1)]  # fits one chunk: level 0 only
    assert pyramid_factors((1, 100, 100), (1, 1, 1), (1, 32, 32)) == [
        (1, 1, 1), (1, 2, 2), (1, 4, 4)]  # an axis of one voxel is never halved


# ---------------------------------------------------------------------------- zarr v2
def zarr2_python() -> list[str]:
    """A Python that imports zarr-python 2 (pip --target into a cache folder, made once)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    target = cache / "napari-mutex-watershed-tests" / "zarr2"
    if not (target / "zarr").exists():
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target",
                               str(target), "zarr>=2.18,<3"], capture_output=True, text=True,
                              timeout=600)
        if done.returncode != 0:
            if any(word in done.stderr for word in ("No matching distribution", "connection",
                                                    "Connection", "resolve", "network")):
                pytest.skip(f"pip cannot reach the package index: {done.stderr[-200:]}")
            raise AssertionError(done.stderr)
    return [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); "
            "exec(sys.stdin.read())"]


ZARR2_SCRIPT = """
import json, sys, zarr
assert zarr.__version__.startswith("2."), zarr.__version__
root = zarr.open_group(sys.argv[-1] if False else {container!r}, mode="r")
labels = root[{dataset!r}]
levels = {{k: [list(labels[k].shape), str(labels[k].dtype)] for k in labels.array_keys()}}
groups = sorted(root.group_keys())
print(json.dumps({{"version": zarr.__version__, "levels": levels, "groups": groups,
                  "ome": labels.attrs["multiscales"][0]["version"],
                  "label": "image-label" in labels.attrs, "max": int(labels["0"][:].max()),
                  "arrays": sorted(root.array_keys())}}))
"""


def read_with_zarr2(container: Path, dataset: str) -> dict:
    import json

    done = subprocess.run(zarr2_python(), input=ZARR2_SCRIPT.format(
        container=str(container), dataset=dataset), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_zarr_python_2_reads_the_zarr_format_2_output(result):
    seen = read_with_zarr2(result["v2"].parent, "labels")
    assert seen["ome"] == "0.4" and seen["label"]
    assert seen["levels"] == {str(i): [list(s), "uint32"] for i, s in enumerate(LEVELS)}
    assert seen["groups"] == ["labels"] and seen["max"] > 0


def test_an_existing_zarr_v2_container_stays_a_v2_hierarchy(tmp_path):
    from napari_mutex_watershed.synthetic import sample_volume

    affinities, _, offsets = sample_volume((12, 32, 32), seed=6)
    container = tmp_path / "dacapo.zarr"
    zarr.open_group(str(container), mode="w", zarr_format=2)
    source = write_affinities(container / "predictions/affs", affinities, offsets)
    assert (container / "predictions/affs/.zarray").exists()  # the container's own format
    # no --zarr-format: the output follows the container, in a nested group
    run_segment(source, container / "segmentations/mws")
    assert (container / "segmentations/.zgroup").exists()
    assert (container / "segmentations/mws/0/.zarray").exists()
    assert not list(container.rglob("zarr.json"))
    seen = read_with_zarr2(container, "segmentations/mws")
    assert seen["groups"] == ["predictions", "segmentations"] and seen["ome"] == "0.4"
    # asking for zarr v3 inside it is refused in one line
    done = subprocess.run([sys.executable, "-m", "napari_mutex_watershed.cli", "segment",
                           str(source), str(container / "other"), "--zarr-format", "3"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "is a zarr v2 container: pass --zarr-format 2" in done.stderr
    with pytest.raises(InvalidInputError):
        from napari_mutex_watershed.storage import output_format

        output_format(container / "other", 3)


def test_killed_pyramid_resumes(result, tmp_path):
    """A run killed during the pyramid finishes it when run again: the pyramid's blocks are
    tracked like every other step's, so only what is missing is written."""
    import json
    import shutil

    from napari_mutex_watershed.blockwise.launch import work_dir_for

    output = tmp_path / "out.zarr/labels"
    run_segment(result["input"], output)
    expected = zarr.open_array(str(output / "2"), mode="r")[:]
    assert expected.any()
    # as if killed during the pyramid's last level: its blocks unwritten and unmarked, the
    # run not complete, the lookup table (deleted only at the very end) still there
    work_dir = work_dir_for(output)
    zarr.open_array(str(output / "2"), mode="r+")[:] = 0
    shutil.rmtree(work_dir / "tracking" / "pyramid-2")
    for node in (output, output / "0"):
        zarr.open(str(node), mode="r+").attrs[COMPLETE_ATTR] = False
    (work_dir / "lookup.npy").write_bytes(b"")
    done = subprocess.run(
        [sys.executable, "-m", "napari_mutex_watershed.cli", "segment", str(result["input"]),
         str(output), "--block-size", *map(str, BLOCK), "--progress", "json"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    progress = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    last = {p["phase"]: p for p in progress}
    for step in ("even", "odd", "relabel", "pyramid-1"):  # nothing redone
        assert last[step]["skipped"] == last[step]["total"], last[step]
    assert last["pyramid-2"]["skipped"] == 0 and last["pyramid-2"]["done"] > 0
    np.testing.assert_array_equal(zarr.open_array(str(output / "2"), mode="r")[:], expected)
    assert zarr.open_group(str(output), mode="r").attrs[COMPLETE_ATTR] is True


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_labels_written_into_an_image_are_listed_by_it(tmp_path, version):
    """Segmenting an OME-Zarr image into its own ``labels`` group gives what OME-Zarr readers
    look for: the image node, then the labels listed by the image's labels group."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    from napari_mutex_watershed.synthetic import sample_volume

    affinities, _, _ = sample_volume((12, 32, 32), seed=8)
    image = tmp_path / "image.ome.zarr"
    zarr_format = 3 if version == "0.5" else 2
    root = zarr.open_group(str(image), mode="w", zarr_format=zarr_format)
    root.create_array("0", data=affinities, chunks=(6, 12, 16, 16))
    axes = [{"name": "c", "type": "channel"}] + [{"name": n, "type": "space"} for n in "zyx"]
    multiscale = {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [1, 2, 1, 1]}]}]}
    if version == "0.5":
        root.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
    else:
        root.attrs["multiscales"] = [{**multiscale, "version": "0.4"}]
    run_segment(image, image / "labels" / "mws")
    nodes = list(Reader(parse_url(str(image)))())
    labels = [n for n in nodes if n.load(Label) is not None]
    assert len(labels) == 1 and labels[0].load(Multiscales) is not None
    assert "image.ome.zarr/labels/mws" in str(labels[0].zarr)
    assert tuple(labels[0].data[0].shape) == (12, 32, 32)
    # the labels point back to their image, as OME-Zarr asks
    attrs = dict(zarr.open_group(str(image / "labels/mws"), mode="r").attrs)
    label = (attrs.get("ome") or attrs)["image-label"]
    assert label["source"] == {"image": "../../"}


UM = ("micrometer",) * 3
LIGHT = {  # scale, translation, units of the image's axes; the funlib geometry of its labels
    "0.1625 um": ((0.5, 0.1625, 0.1625), (1.0, 0.325, 0.325), UM,
                  ((500000, 162500, 162500), (1000000, 325000, 325000))),
    "not whole picometres": ((0.3, 0.10833333333, 0.10833333333), (0.6, 0.2, 0.2), UM,
                             ((1, 1, 1), (0, 0, 0))),
    "no unit": ((0.3, 0.10833333333, 0.10833333333), (0.6, 0.2, 0.2), (None,) * 3,
                ((1, 1, 1), (0, 0, 0))),
}


@pytest.mark.parametrize("case", list(LIGHT))
def test_labels_of_fractional_input_overlay_it_in_every_reader(tmp_path, case):
    """Light microscopy: an OME-Zarr image in 0.1625 um voxels. The run's geometry is whole
    picometres (funlib needs integers), or voxels where no whole number fits, but the
    labels' OME scale is the image's own: napari-ome-zarr and this plugin's reader put image
    and labels at one scale and translation (they were a million times larger in
    napari-ome-zarr, or at scale 1 where no whole number fitted)."""
    from funlib.persistence import open_ds
    from napari_ome_zarr import napari_get_reader as ome_reader

    from napari_mutex_watershed.gui.reader import napari_get_reader

    scale, translation, units, (voxel_size, offset) = LIGHT[case]
    image = _light_image(tmp_path, scale, translation, units)
    labels = image / "labels/mws"
    run_segment(image, labels)

    geometry = {}
    for name, reader in (("ours", napari_get_reader), ("napari-ome-zarr", ome_reader)):
        for path in (image, labels):
            # napari-ome-zarr opens the image with its labels: the one asked for
            _, kwargs, _ = reader(str(path))(str(path))[0 if path == image else -1]
            geometry[name, path.name] = (tuple(kwargs["scale"])[-3:],
                                         tuple(kwargs.get("translate") or (0, 0, 0))[-3:],
                                         tuple(kwargs.get("units") or (None,) * 3)[-3:])
    assert geometry["ours", image.name] == (scale, translation, units)
    assert geometry["ours", "mws"] == geometry["ours", image.name]
    assert geometry["napari-ome-zarr", "mws"][0::2] == (scale, units)
    assert geometry["napari-ome-zarr", image.name][0::2] == (scale, units)
    level0 = open_ds(str(labels / "0"))  # funlib: whole numbers of the same place
    assert (tuple(level0.voxel_size), tuple(level0.offset)) == (voxel_size, offset)
    # in voxels where no whole number fits: no unit (they were micrometres, 1 um voxels)
    assert any(level0.units) == (case == "0.1625 um"), level0.units


def test_mixed_units_are_shown_in_one(tmp_path):
    """z in nanometres, y and x in micrometres: napari does not convert between units, so
    image and labels are shown in picometres, in proportion (z was 3000 times too thick)."""
    from napari_mutex_watershed.gui.reader import napari_get_reader

    image = _light_image(tmp_path, (500, 0.1625, 0.1625), (0, 0, 0),
                         ("nanometer", "micrometer", "micrometer"))
    run_segment(image, image / "labels/mws")
    for path in (image, image / "labels/mws"):
        ((_, kwargs, _),) = napari_get_reader(str(path))(str(path))
        assert tuple(kwargs["scale"])[-3:] == (500000, 162500, 162500)
        assert tuple(kwargs["units"])[-3:] == ("picometer",) * 3


def _light_image(folder, scale, translation, units):
    from napari_mutex_watershed.synthetic import sample_volume

    affinities, _, offsets = sample_volume((8, 24, 24), seed=2)
    image = folder / "light.ome.zarr"
    root = zarr.open_group(str(image), mode="w")
    root.create_array("s0", data=affinities, chunks=(6, 8, 12, 12))
    root.attrs["offsets"] = [list(o) for o in offsets]
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", **({"unit": u} if u else {})} for n, u in zip("zyx", units)]
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [
        {"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [1, *scale]},
            {"type": "translation", "translation": [0, *translation]}]}]}]}
    return image
