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

from tripwire.detectors.feature_bank import FeatureBankDetector, largest_dot_products
from tripwire.detectors.params import PositiveInt
from tripwire.detectors.registry import register_detector
from tripwire.features import Features


def confidence_bank(h: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Rows c(x)·h/‖h‖ (float64) of the guidance bank."""
    confidence = torch.logsumexp(logits.double(), dim=1, keepdim=True)
    return nn.functional.normalize(h.double(), dim=1) * confidence


@register_detector
class NNGuideDetector(FeatureBankDetector):
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

    k: PositiveInt = 10

    def _fit_features(self, model: nn.Module, features: Features) -> None:
        assert features.penultimate is not None
        rows = self.bank_rows_of(features)
        self.bank_ = confidence_bank(features.penultimate[rows], features.logits[rows])

    def _score_features(self, features: Features) -> torch.Tensor:
        h = self._penultimate(features, self.bank_.shape[1])
        z = nn.functional.normalize(h.double(), dim=1)
        guidance = largest_dot_products(z, self.bank_.to(z.device), self.k)[0].mean(dim=1)
        return -torch.logsumexp(features.logits.double(), dim=1) * guidance
