"""Maximum softmax probability — Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and
Out-of-Distribution Examples in Neural Networks" (ICLR 2017), the "baseline" of Zhao et al.

    s(x) = 1 − max_c softmax(f(x))_c

(higher = more anomalous). Nothing is learned: `fit` only records the model and input shape.
"""

from __future__ import annotations

import torch
from torch import nn

from tripwire.data.base import ImageSet
from tripwire.detectors.base import Detector
from tripwire.detectors.registry import register_detector


def max_softmax(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """max_c softmax(logits / T)_c per row, computed in float64 (T = 1000 needs the precision)."""
    return torch.softmax(logits.double() / temperature, dim=1).amax(dim=1)


@register_detector
class MSPDetector(Detector):
    """1 − max softmax probability (Hendrycks & Gimpel 2017).

    Example:
        >>> det = MSPDetector().fit(model, mnist_train)                # doctest: +SKIP
        >>> det.score(model, x)                                        # doctest: +SKIP
    """

    name = "msp"

    def __init__(self) -> None:
        pass

    def _fit(self, model: nn.Module, data: ImageSet, anomalies: ImageSet | None) -> None:
        pass

    def _score_batch(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return 1.0 - max_softmax(logits), logits.argmax(dim=1)
