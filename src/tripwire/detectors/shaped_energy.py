"""`ShapedEnergyDetector`: the base of activation-shaping detectors (ReAct, ASH, SCALE).

Each maps the penultimate features h to shaped features h' = shape(h), recomputes the logits
through the classifier head, f' = W·h' + b, and scores their free energy (Liu et al. 2020):

    s(x) = −log Σ_k exp f'_k(x)            (higher = more anomalous)

The head's W and b are kept in the detector's state, so it scores features without the model.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import nn

from tripwire.detectors.energy import energy
from tripwire.detectors.feature_detector import FeatureDetector
from tripwire.detectors.params import Percentile
from tripwire.detectors.state import learned
from tripwire.features import Features
from tripwire.head import check_head_state, head_weights


class ShapedEnergyDetector(FeatureDetector):
    """Energy of the logits recomputed from shaped penultimate features; subclasses give
    `shape` (and, where they learn something, `_fit_shape`). Every one of them is set by a
    percentile p in [0, 100) of the activations."""

    uses_penultimate = True

    percentile: Percentile = 90.0

    head_weight_: torch.Tensor = learned()
    head_bias_: torch.Tensor = learned()

    def _fit_features(self, model: nn.Module, features: Features) -> None:
        self.head_weight_, self.head_bias_ = head_weights(model)
        assert features.penultimate is not None
        self._fit_shape(features.penultimate.double())

    def _fit_shape(self, h: torch.Tensor) -> None:
        """Learn what `shape` needs from the penultimate features of the ID fit images."""

    @abstractmethod
    def shape(self, h: torch.Tensor) -> torch.Tensor:
        """The shaped features h' (N×D, float64) of penultimate features h (N×D, float64)."""

    def _score_features(self, features: Features) -> torch.Tensor:
        h = self._penultimate(features, self.head_weight_.shape[1])
        w, b = self.head_weight_.to(h.device), self.head_bias_.to(h.device)
        return energy(self.shape(h.double()) @ w.T + b)

    def _check_state(self) -> None:
        check_head_state(self.head_weight_, self.head_bias_, self.num_classes_)


def kept_count(width: int, percentile: float) -> int:
    """How many of `width` activations lie above the `percentile`-th per-sample percentile:
    width − round(width · p / 100), at least 1 (the rounding of ASH's reference code).
    `width` is read as a plain int, so that a traced graph (`tripwire.export`) keeps k fixed."""
    width = int(width)
    return max(1, width - round(width * percentile / 100.0))
