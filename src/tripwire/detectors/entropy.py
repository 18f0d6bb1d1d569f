"""Predictive entropy of the softmax — the classic uncertainty score (used as an OOD baseline,
e.g. by Hendrycks et al. 2019 and OpenOOD):

    s(x) = −Σ_k p_k(x) log p_k(x),     p = softmax(f(x))

(higher = more anomalous). Nothing is learned.
"""

from __future__ import annotations

import torch

from tripwire.detectors.logit_score import LogitScoreDetector
from tripwire.detectors.registry import register_detector


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) per row, in float64 (exact where p_k underflows to 0)."""
    log_p = torch.log_softmax(logits.double(), dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


@register_detector
class EntropyDetector(LogitScoreDetector):
    """Entropy of the predicted class distribution.

    Examples:
        >>> det = EntropyDetector().fit(model, train)                  # doctest: +SKIP
        >>> det.score(model, x)                                        # doctest: +SKIP
    """

    name = "entropy"

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return softmax_entropy(logits)
