"""Maximum logit — Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt & Song, "Scaling
Out-of-Distribution Detection for Real-World Settings" (ICML 2022):

    s(x) = −max_k f_k(x)

(higher = more anomalous). Unlike max-softmax it keeps the logits' scale, which the softmax
normalises away. Nothing is learned.
"""

from __future__ import annotations

import torch
from torch import nn

from tripwire.data.base import ImageSet
from tripwire.detectors.base import Detector
from tripwire.detectors.registry import register_detector


@register_detector
class MaxLogitDetector(Detector):
    """Negative maximum logit (Hendrycks et al. 2022).

    Example:
        >>> det = MaxLogitDetector().fit(model, train)                 # doctest: +SKIP
        >>> det.score(model, x)                                        # doctest: +SKIP
    """

    name = "maxlogit"

    def __init__(self) -> None:
        pass

    def _fit(self, model: nn.Module, data: ImageSet, anomalies: ImageSet | None) -> None:
        pass

    def _score_batch(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return -logits.double().amax(dim=1), logits.argmax(dim=1)
