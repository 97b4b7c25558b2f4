"""What a full run from napari is given, without Qt: its block size from the text typed, and
the copy of an in-memory layer, reused while the layer's data are unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mutex_watershed.blockwise.run_outputs import (
    content_hash,
    input_copy_path,
    parse_block_size,
    stored_hash,
    write_input_copy,
)
from napari_mutex_watershed.storage import open_affinities
from napari_mutex_watershed.synthetic import sample_volume


def test_block_size_from_text():
    assert parse_block_size(" ", 3) is None  # chosen from the region (block_shape)
    assert parse_block_size("32", 3) == (32, 32, 32)
    assert parse_block_size("[8, 16; 16]", 3) == (8, 16, 16)
    for text, message in (("a, b", "cannot read 'a, b'"), ("8, 8", "give 3 positive"),
                          ("0", "positive integers")):
        with pytest.raises(ValueError, match=message):
            parse_block_size(text, 3)


def test_the_input_copy_is_tagged_with_the_layers_content(tmp_path):
    affinities, _, offsets = sample_volume((8, 16, 16), seed=1)
    path = input_copy_path(tmp_path / "runs" / "layer.zarr" / "labels_mws")
    assert path == tmp_path / "runs" / "layer.zarr" / ".napari_input" / "labels_mws"
    token = content_hash(affinities, offsets, (2, 1, 1), (0, 0, 0))
    assert stored_hash(path) is None
    write_input_copy(path, affinities, offsets, (2, 1, 1), (0, 0, 0), token)
    assert stored_hash(path) == token
    np.testing.assert_array_equal(open_affinities(path).array[:], affinities)
    # anything the job would see differently gives another hash: data, voxel size
    changed = affinities.copy()
    changed[0, 4, 8, 8] += 0.25
    assert content_hash(changed, offsets, (2, 1, 1), (0, 0, 0)) != token
    assert content_hash(affinities, offsets, (1, 1, 1), (0, 0, 0)) != token


def test_a_mask_copy_is_on_the_affinities_grid_and_tagged(tmp_path):
    from napari_mutex_watershed.blockwise.mask_seeds import open_guide
    from napari_mutex_watershed.blockwise.run_outputs import guide_copy_path, write_guide_copy

    affinities, _, offsets = sample_volume((8, 16, 16), seed=1)
    output = tmp_path / "layer.zarr" / "labels_mws"
    copy = write_input_copy(input_copy_path(output), affinities, offsets, (2, 1, 1), (4, 0, 0),
                            "token")
    mask = np.zeros((8, 16, 16), np.uint8)
    mask[:, :8] = 1
    path = guide_copy_path(output, "mask")
    token = content_hash(mask, [], (2, 1, 1), (4, 0, 0))
    assert token != content_hash(1 - mask, [], (2, 1, 1), (4, 0, 0))
    write_guide_copy(path, mask, (2, 1, 1), (4, 0, 0), token)
    assert stored_hash(path) == token
    # what the job's own check accepts: the affinities' shape, voxel size and offset
    assert open_guide(path, "mask", open_affinities(copy)) == str(path.resolve())
