"""Generalised entropy — Liu, Lochman & Zach, "GEN: Pushing the Limits of Softmax-Based
Out-of-Distribution Detection" (CVPR 2023):

    s(x) = Σ_{j ≤ M} p_(j)^γ (1 − p_(j))^γ,     p = softmax(f(x)), p_(1) ≥ p_(2) ≥ …

over the M largest probabilities (higher = more anomalous). γ = 0.1 and M = 100 as in the paper
(M is capped at the number of classes). Nothing is learned.
"""

from __future__ import annotations

import torch

from tripwire.detectors.logit_score import LogitScoreDetector
from tripwire.detectors.params import OpenFraction, PositiveInt
from tripwire.detectors.registry import register_detector


def generalised_entropy(logits: torch.Tensor, gamma: float = 0.1, top: int = 100) -> torch.Tensor:
    """Σ over the `top` largest softmax probabilities p of p^γ (1 − p)^γ, in float64."""
    p = torch.softmax(logits.double(), dim=1)
    p = p.topk(min(top, p.shape[1]), dim=1).values
    return (p.pow(gamma) * (1.0 - p).clamp_min(0.0).pow(gamma)).sum(dim=1)


@register_detector
class GENDetector(LogitScoreDetector):
    """Generalised entropy of the top-M softmax probabilities (Liu et al. 2023).

    Args:
        gamma: γ ∈ (0, 1) (paper: 0.1).
        top: M, how many of the largest probabilities count (paper: 100).

    Examples:
        >>> det = GENDetector().fit(model, train)                      # doctest: +SKIP
        >>> det.score(model, x)                                        # doctest: +SKIP
    """

    name = "gen"

    gamma: OpenFraction = 0.1
    top: PositiveInt = 100

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return generalised_entropy(logits, self.gamma, self.top)
