"""What may be replaced: a run's own output, whatever a system leaves in its folder, and
nothing a user put there."""

from __future__ import annotations

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.blockwise.launch import segment_blockwise_zarr
from napari_mutex_watershed.safety import is_ours
from napari_mutex_watershed.storage import write_affinities
from napari_mutex_watershed.synthetic import sample_volume


def test_a_system_s_clutter_leaves_an_output_ours_and_a_user_s_file_does_not(tmp_path):
    """Finder's .DS_Store (or AppleDouble ._ files, Windows' Thumbs.db, consolidated
    metadata) made a run's own output another's: neither resumed nor replaced."""
    affinities, _, offsets = sample_volume((8, 32, 32), seed=1)
    source = write_affinities(tmp_path / "in.zarr/affinities", affinities, offsets)
    output = tmp_path / "out.zarr/labels"
    parameters = WatershedParameters(offsets=offsets)
    segment_blockwise_zarr(source, output, parameters, progress="none")
    for clutter in (".DS_Store", "._0", "Thumbs.db", ".zmetadata"):
        (output / clutter).write_text("")
    assert is_ours(output)
    segment_blockwise_zarr(source, output, parameters.model_copy(update={"bias": 0.3}),
                           progress="none", overwrite=True)  # replaced, clutter and all
    (output / "notes.csv").write_text("mine")
    assert not is_ours(output)
    (output / "notes.csv").unlink()
    (output / "._notes.csv").write_text("mine")  # named like macOS's, of no file there
    assert not is_ours(output)
    (output / "._notes.csv").unlink()
    (output / "extra").mkdir()  # a folder that is no level
    assert not is_ours(output)


def test_another_tool_s_labels_holding_a_file_are_not_said_to_be_ours(tmp_path):
    """The refusal named the file ("move it elsewhere") as if the labels would then be
    replaced: they are another tool's, and would not."""
    import pytest
    import zarr

    from napari_mutex_watershed.errors import UnsafeOutputError
    from napari_mutex_watershed.safety import check_output_location

    labels = zarr.open_group(str(tmp_path / "o.zarr/seg"), mode="w")
    labels.create_array("0", shape=(4, 4), dtype="uint32")
    labels.attrs["ome"] = {"version": "0.5", "image-label": {}, "multiscales": [{
        "axes": [{"name": "y"}, {"name": "x"}], "datasets": [{"path": "0"}]}]}
    (tmp_path / "o.zarr/seg/notes.txt").write_text("mine")
    with pytest.raises(UnsafeOutputError, match="is not an output of napari-mutex-watershed"):
        check_output_location(tmp_path / "o.zarr/seg", {})
