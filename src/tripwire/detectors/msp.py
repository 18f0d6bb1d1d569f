"""Maximum softmax probability — Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and
Out-of-Distribution Examples in Neural Networks" (ICLR 2017), the "baseline" of Zhao et al.

    s(x) = 1 − max_c softmax(f(x))_c

(higher = more anomalous). Nothing is learned: `fit` only records the model and input shape.
"""

from __future__ import annotations

import torch

from tripwire.detectors.logit_score import LogitScoreDetector
from tripwire.detectors.registry import register_detector


def max_softmax(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """max_c softmax(logits / T)_c per row, computed in float64 (T = 1000 needs the precision)."""
    return torch.softmax(logits.double() / temperature, dim=1).amax(dim=1)


@register_detector
class MSPDetector(LogitScoreDetector):
    """1 − max softmax probability (Hendrycks & Gimpel 2017).

    Examples:
        >>> det = MSPDetector().fit(model, mnist_train)                # doctest: +SKIP
        >>> det.score(model, x)                                        # doctest: +SKIP
    """

    name = "msp"

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return 1.0 - max_softmax(logits)
