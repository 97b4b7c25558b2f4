"""File > Open Sample: synthetic cells with noisy affinities and their ground truth."""

from __future__ import annotations

from ..synthetic import sample_volume

SAMPLE_SHAPE = (64, 128, 128)


def sample_cells():
    """Affinities (channels first, offsets in the metadata) and the ground-truth cells."""
    affinities, labels, offsets = sample_volume(SAMPLE_SHAPE)
    return [
        (
            affinities,
            {
                "name": "affinities",
                "metadata": {"offsets": [list(o) for o in offsets]},
                "colormap": "gray",
                "contrast_limits": (0.0, 1.0),
            },
            "image",
        ),
        (labels, {"name": "ground truth", "opacity": 0.5, "visible": False}, "labels"),
    ]
