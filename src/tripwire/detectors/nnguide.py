"""Nearest-neighbour guidance — Park, Jung & Teoh, "Nearest Neighbor Guidance for
Out-of-Distribution Detection" (ICCV 2023). With penultimate features h, logits f and the
confidence c(x) = log Σ_k exp f_k(x) (the negative energy):

    bank   = { c(x_i) · h(x_i) / ‖h(x_i)‖ }  over the ID fit images (a seeded sample of
                                             `bank_size` of them, or all)
    g(x)   = the mean of the k largest dot products of h(x) / ‖h(x)‖ with the bank
    s(x)   = − c(x) · g(x)                   (the paper's score is c·g; negated here, higher =
                                             more anomalous)

k = 10 with every fit image in the bank, pytorch-ood's defaults. (OpenOOD's CIFAR configuration
keeps k = 100 and a 1 % sample of 50,000 training images; on a smaller fit set that sample is
barely larger than k, so it is not the default here.)
"""

from __future__ import annotations

import torch
from torch import nn

from tripwire.detectors.feature_detector import FeatureDetector
from tripwire.detectors.knn import bank_rows, check_bank, largest_dot_products
from tripwire.detectors.params import PositiveInt
from tripwire.detectors.registry import register_detector
from tripwire.detectors.state import learned
from tripwire.features import Features


def confidence_bank(h: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Rows c(x)·h/‖h‖ (float64) of the guidance bank."""
    confidence = torch.logsumexp(logits.double(), dim=1, keepdim=True)
    return nn.functional.normalize(h.double(), dim=1) * confidence


@register_detector
class NNGuideDetector(FeatureDetector):
    """Confidence times its agreement with the nearest confidence-scaled ID features
    (Park et al. 2023), negated.

    Args:
        k: how many of the largest similarities to the bank are averaged (pytorch-ood: 10).
        bank_size: keep at most this many fit images in the bank (a seeded sample; None: all).
        seed: seed of that sample.

    Examples:
        >>> det = NNGuideDetector().fit(model, train).calibrate(model, val)   # doctest: +SKIP
    """

    name = "nnguide"
    uses_penultimate = True

    k: PositiveInt = 10
    bank_size: PositiveInt | None = None
    seed: int = 0

    bank_: torch.Tensor = learned()

    def _check_params(self) -> None:
        if self.bank_size is not None and self.bank_size < self.k:
            raise ValueError(f"bank_size must be None or ≥ k = {self.k}, got {self.bank_size}")

    def _fit_features(self, model: nn.Module, features: Features) -> None:
        assert features.penultimate is not None
        rows = bank_rows(len(features), self.bank_size, self.seed, self.k)
        self.bank_ = confidence_bank(features.penultimate[rows], features.logits[rows])

    def _score_features(self, features: Features) -> torch.Tensor:
        h = self._penultimate(features, self.bank_.shape[1])
        z = nn.functional.normalize(h.double(), dim=1)
        guidance = largest_dot_products(z, self.bank_.to(z.device), self.k)[0].mean(dim=1)
        return -torch.logsumexp(features.logits.double(), dim=1) * guidance

    def _check_state(self) -> None:
        check_bank(self.bank_, self.k)
