"""Scoring a segmentation against a (sparse) ground truth, and ranking the results.

scikit-image's ``adapted_rand_error`` and ``variation_of_information`` with the ground truth's 0
ignored: only labelled voxels count, so a sparse ground truth works. ``rank`` orders by adapted
Rand error, ties by grid order, so the best setting is deterministic."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..parameters import WatershedParameters
from .grid import Setting


# ---------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class Scores:
    """Agreement with the ground truth over its labelled voxels (lower is better)."""

    adapted_rand_error: float
    voi_split: float
    voi_merge: float


def count_segments(labels: np.ndarray) -> int:
    """Distinct non-zero ids."""
    ids = np.unique(np.asarray(labels))
    return int(np.count_nonzero(ids))


def _consecutive(labels: np.ndarray, keep_zero: bool) -> np.ndarray:
    """Ids 0..N (0 stays 0 when ``keep_zero``): small, dense contingency tables."""
    ids, inverse = np.unique(np.asarray(labels), return_inverse=True)
    inverse = inverse.reshape(labels.shape).astype(np.int64, copy=False)
    if keep_zero and ids.size and ids[0] != 0:
        inverse += 1
    return inverse


def score(segmentation: np.ndarray, ground_truth: np.ndarray) -> Scores | None:
    """Adapted Rand error, VOI split and VOI merge of ``segmentation`` against
    ``ground_truth``, counting only voxels where the ground truth is > 0 (negative ids, a
    common "ignore", are unlabelled too).

    Both come from ``skimage.metrics``: ``adapted_rand_error(gt, seg)`` and
    ``variation_of_information(gt, seg)``, whose two values are H(seg | gt) (split: one
    true object cut into several segments) and H(gt | seg) (merge), with
    ``ignore_labels=(0,)``. None when the ground truth has no labelled voxel.
    """
    from skimage.metrics import adapted_rand_error, variation_of_information

    segmentation = np.asarray(segmentation)
    ground_truth = np.asarray(ground_truth)
    if segmentation.shape != ground_truth.shape:
        raise ValueError(
            f"the segmentation has shape {segmentation.shape}, the ground truth "
            f"{ground_truth.shape}"
        )
    if ground_truth.dtype.kind == "i" and ground_truth.min(initial=0) < 0:
        ground_truth = np.where(ground_truth > 0, ground_truth, 0)  # unlabelled, as 0
    if not np.any(ground_truth):
        return None
    truth = _consecutive(ground_truth, keep_zero=True)
    test = _consecutive(segmentation, keep_zero=False)
    error, _precision, _recall = adapted_rand_error(truth, test, ignore_labels=(0,))
    split, merge = variation_of_information(truth, test, ignore_labels=(0,))
    return Scores(float(error), float(split), float(merge))


# ---------------------------------------------------------------------------- results
@dataclass
class SweepResult:
    setting: Setting
    labels: np.ndarray | None = None
    n_segments: int = 0
    scores: Scores | None = None
    seconds: float = 0.0
    error: str | None = None

    @property
    def name(self) -> str:
        return self.setting.name

    @property
    def parameters(self) -> WatershedParameters:
        return self.setting.parameters

    @property
    def adapted_rand_error(self) -> float | None:
        return None if self.scores is None else self.scores.adapted_rand_error


def rank(results: Sequence[SweepResult]) -> list[SweepResult]:
    """Best first: scored results by adapted Rand error (ties: grid order), then unscored
    ones in grid order, then failed ones."""

    def key(result: SweepResult):
        if result.error is not None:
            return (2, 0.0, result.setting.index)
        if result.scores is None or math.isnan(result.scores.adapted_rand_error):
            return (1, 0.0, result.setting.index)
        return (0, result.scores.adapted_rand_error, result.setting.index)

    return sorted(results, key=key)


def best(results: Sequence[SweepResult]) -> SweepResult | None:
    """The scored result with the lowest adapted Rand error (first in grid order on ties)."""
    ranked = rank(results)
    if ranked and ranked[0].error is None and ranked[0].scores is not None and not math.isnan(
        ranked[0].scores.adapted_rand_error
    ):
        return ranked[0]
    return None


