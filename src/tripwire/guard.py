"""`Guard`: a classifier and a fitted, calibrated detector bound together for deployment."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tripwire.detectors.base import DataLike, Detector
from tripwire.errors import NotFittedError


@dataclass(frozen=True)
class GuardResult:
    """What the guard says about a batch: the model's classes, anomaly scores (higher = more
    anomalous) and flags (True = do not trust the prediction)."""

    predicted: torch.Tensor
    scores: torch.Tensor
    is_anomaly: torch.Tensor


class Guard:
    """Run a classifier and its anomaly detector in one call.

    The weights are checked once, here: a detector fitted on other weights is refused
    (`ModelMismatchError`), and one without thresholds (`calibrate`) too.

    Example:
        >>> guard = Guard(model, Detector.load("det/"))          # doctest: +SKIP
        >>> result = guard(images)                              # doctest: +SKIP
        >>> result.predicted[~result.is_anomaly]                # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, detector: Detector) -> None:
        detector.check_model(model)
        if detector.thresholds_ is None:
            raise NotFittedError("the detector has no thresholds: call calibrate(model, id_val)")
        self.model = model
        self.detector = detector

    def __call__(self, x: DataLike, batch_size: int = 256) -> GuardResult:
        """Classify and check a batch (float N×C×H×W in [0, 1], or an ImageSet)."""
        scores, predicted = self.detector.score_and_predict(self.model, x, batch_size)
        return GuardResult(predicted, scores, self.detector.flag(scores, predicted))
