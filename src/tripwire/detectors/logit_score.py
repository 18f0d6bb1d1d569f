"""`LogitScoreDetector`: the base of detectors whose score is a fixed function of the logits
(MSP, energy, MaxLogit, entropy, GEN). Nothing is learned: `fit` only records the model and the
input shape; a subclass gives `score_logits`."""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import nn

from tripwire.detectors.feature_detector import FeatureDetector
from tripwire.features import Features


class LogitScoreDetector(FeatureDetector):
    """A detector whose anomaly score is `score_logits` of the model's logits."""

    def reads_layers(self) -> bool:
        return False

    def _fit_features(self, model: nn.Module, features: Features) -> None:
        pass

    @abstractmethod
    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The anomaly score (N,) of logits (N×K); higher = more anomalous."""

    def _score_features(self, features: Features) -> torch.Tensor:
        return self.score_logits(features.logits)
