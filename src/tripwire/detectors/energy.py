"""Energy score — Liu, Wang, Owens & Li, "Energy-based Out-of-distribution Detection" (NeurIPS
2020):

    E(x; T) = −T · log Σ_c exp(f_c(x) / T)

ID inputs get low (very negative) energy, so E itself is the anomaly score (higher = more
anomalous). T = 1 as in the paper. Nothing is learned. Not one of Zhao et al.'s baselines; cheap
and expected by users.
"""

from __future__ import annotations

import torch

from tripwire.detectors.logit_score import LogitScoreDetector
from tripwire.detectors.params import Positive
from tripwire.detectors.registry import register_detector


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """−T · logsumexp(logits / T) per row, in float64."""
    return -temperature * torch.logsumexp(logits.double() / temperature, dim=1)


@register_detector
class EnergyDetector(LogitScoreDetector):
    """Free energy −T·logsumexp(f(x)/T) of the logits (Liu et al. 2020).

    Args:
        temperature: T (paper: 1).

    Examples:
        >>> det = EnergyDetector().fit(model, mnist_train)             # doctest: +SKIP
        >>> det.score(model, x)                                        # doctest: +SKIP
    """

    name = "energy"

    temperature: Positive = 1.0

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return energy(logits, self.temperature)
