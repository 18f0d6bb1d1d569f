"""Maximum logit — Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt & Song, "Scaling
Out-of-Distribution Detection for Real-World Settings" (ICML 2022):

    s(x) = −max_k f_k(x)

(higher = more anomalous). Unlike max-softmax it keeps the logits' scale, which the softmax
normalises away. Nothing is learned.
"""

from __future__ import annotations

import torch

from tripwire.detectors.logit_score import LogitScoreDetector
from tripwire.detectors.registry import register_detector


@register_detector
class MaxLogitDetector(LogitScoreDetector):
    """Negative maximum logit (Hendrycks et al. 2022).

    Examples:
        >>> det = MaxLogitDetector().fit(model, train)                 # doctest: +SKIP
        >>> det.score(model, x)                                        # doctest: +SKIP
    """

    name = "maxlogit"

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return -logits.double().amax(dim=1)
