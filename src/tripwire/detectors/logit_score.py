"""`LogitScoreDetector`: the base of detectors whose score is a fixed function of the logits
(MSP, energy, MaxLogit, entropy, GEN). Nothing is learned: `fit` only records the model and the
input shape; a subclass gives `score_logits`."""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import nn

from tripwire.data.base import ImageSet
from tripwire.detectors.base import Detector


class LogitScoreDetector(Detector):
    """A detector whose anomaly score is `score_logits` of the model's logits."""

    def _fit(self, model: nn.Module, data: ImageSet, anomalies: ImageSet | None) -> None:
        pass

    @abstractmethod
    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The anomaly score (N,) of logits (N×K); higher = more anomalous."""

    def _score_batch(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return self.score_logits(logits), logits.argmax(dim=1)
