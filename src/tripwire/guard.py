"""`Guard`: a classifier and a fitted, calibrated detector bound together for deployment."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tripwire.detectors.base import Detector, ScoreInput
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

    The model's weights are checked here and again whenever they change (`ModelMismatchError`
    for other weights than the detector was fitted on, see `Detector.verify_model`); a detector
    without thresholds (`calibrate`) is refused. ``verify_model=False`` skips the check, for a
    model fine-tuned on purpose.

    Examples:
        >>> guard = Guard(model, Detector.load("det/"))          # doctest: +SKIP
        >>> result = guard(images)                              # doctest: +SKIP
        >>> result.predicted[~result.is_anomaly]                # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, detector: Detector, *, verify_model: bool = True) -> None:
        if verify_model:
            detector.verify_model(model)
        if detector.thresholds_ is None:
            raise NotFittedError("the detector has no thresholds: call calibrate(model, id_val)")
        self.model = model
        self.detector = detector
        self.verify_model = verify_model

    def __call__(self, x: ScoreInput, batch_size: int = 256) -> GuardResult:
        """Classify and check images in any form `Detector.score_and_predict` takes (tensors or
        numpy arrays, float in [0, 1] or uint8, one image, an ImageSet, a DataLoader)."""
        scores, predicted = self.detector.score_and_predict(
            self.model, x, batch_size, verify_model=self.verify_model
        )
        return GuardResult(predicted, scores, self.detector.flag(scores, predicted))
