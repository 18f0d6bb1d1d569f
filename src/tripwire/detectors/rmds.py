"""Relative Mahalanobis distance — Ren, Fort, Liu, Roy, Padhy & Lakshminarayanan, "A Simple Fix to
Mahalanobis Distance for Improving Near-OOD Detection" (ICML 2021 UDL workshop). On the
penultimate features z:

    MD_k(z) = (z − μ_k)ᵀ Σ⁻¹ (z − μ_k)       class means μ_k, covariance Σ shared by the classes
    MD_0(z) = (z − μ₀)ᵀ Σ₀⁻¹ (z − μ₀)         one Gaussian over all ID fit features (background)
    s(z)    = min_k (MD_k(z) − MD_0(z))       (higher = more anomalous)

Σ and Σ₀ are the plain maximum-likelihood estimates, as in the paper (and OpenOOD, pytorch-ood);
`shrinkage` offers the Ledoit–Wolf or OAS shrunk ones. Their pseudo-inverses are used (as
OpenOOD does), so feature units that never fire on the fit images (dead ReLUs, common in
penultimate layers) add nothing instead of making Σ singular. Classes come from the fit images'
labels (their predicted classes for unlabelled images).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tripwire.detectors.feature_detector import FeatureDetector
from tripwire.detectors.mahalanobis import ESTIMATORS, Shrinkage
from tripwire.detectors.registry import register_detector
from tripwire.detectors.state import learned
from tripwire.errors import InvalidInputError
from tripwire.features import Features


def gaussian(
    z: torch.Tensor, labels: torch.Tensor, num_classes: int, shrinkage: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class means (K×D), the pseudo-inverse of the covariance shared by the classes (D×D) and
    which classes had fit images (K,), float64; Σ by `shrinkage` ("none": maximum likelihood)."""
    z = z.double()
    counts = torch.bincount(labels, minlength=num_classes)
    means = torch.zeros(num_classes, z.shape[1], dtype=torch.float64).index_add_(0, labels, z)
    means /= counts.clamp_min(1)[:, None]
    from sklearn import covariance  # loads in ≈ 1 s: imported where used (CLI start-up)

    estimator = getattr(covariance, ESTIMATORS[shrinkage])(assume_centered=True)
    sigma = estimator.fit((z - means[labels]).numpy()).covariance_
    precision = torch.from_numpy(np.linalg.pinv(sigma, hermitian=True))
    return means, 0.5 * (precision + precision.T), counts > 0


def squared_distances(
    z: torch.Tensor, means: torch.Tensor, precision: torch.Tensor
) -> torch.Tensor:
    """(z − μ_k)ᵀ P (z − μ_k) for every row of `z` (N×D) and mean μ_k (K×D): N×K, float64."""
    diff = z.double().unsqueeze(1) - means.to(z.device).unsqueeze(0)
    return ((diff @ precision.to(z.device)) * diff).sum(dim=2)


@register_detector
class RMDSDetector(FeatureDetector):
    """Class-conditional Mahalanobis distance minus a background Gaussian's (Ren et al. 2021).

    Args:
        shrinkage: covariance estimator, "none" (the paper's maximum likelihood),
            "ledoit-wolf" or "oas".

    Examples:
        >>> det = RMDSDetector().fit(model, train).calibrate(model, val)   # doctest: +SKIP
    """

    name = "rmds"
    uses_penultimate = True

    shrinkage: Shrinkage = "none"

    means_: torch.Tensor = learned()
    precision_: torch.Tensor = learned()
    present_: torch.Tensor = learned()
    background_mean_: torch.Tensor = learned()
    background_precision_: torch.Tensor = learned()

    def _fit_features(self, model: nn.Module, features: Features) -> None:
        z, labels = features.penultimate, features.classes()
        assert z is not None
        if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes_:
            raise InvalidInputError(
                f"labels must lie in 0…{self.num_classes_ - 1} (the model's classes)"
            )
        self.means_, self.precision_, self.present_ = gaussian(
            z, labels, self.num_classes_, self.shrinkage
        )
        background, self.background_precision_, _ = gaussian(
            z, torch.zeros(len(z), dtype=torch.long), 1, self.shrinkage
        )
        self.background_mean_ = background[0]

    def _score_features(self, features: Features) -> torch.Tensor:
        z = self._penultimate(features, self.means_.shape[1])
        per_class = squared_distances(z, self.means_, self.precision_)
        per_class = per_class.masked_fill(~self.present_.to(z.device), float("inf"))
        background = squared_distances(z, self.background_mean_[None], self.background_precision_)
        return (per_class - background).amin(dim=1)

    def _check_state(self) -> None:
        k, d = self.means_.shape
        shapes = {
            "precision": (self.precision_.shape, (d, d)),
            "present": (self.present_.shape, (k,)),
            "background_mean": (self.background_mean_.shape, (d,)),
            "background_precision": (self.background_precision_.shape, (d, d)),
        }
        for name, (got, want) in shapes.items():
            if tuple(got) != want:
                raise ValueError(f"{name} has shape {tuple(got)}, expected {want}")
        if k != self.num_classes_ or self.present_.dtype != torch.bool:
            raise ValueError(f"means must have {self.num_classes_} rows and present be bool")
        floats = (self.means_, self.precision_, self.background_mean_, self.background_precision_)
        if not all(t.dtype == torch.float64 and bool(torch.isfinite(t).all()) for t in floats):
            raise ValueError("the Gaussians must be finite float64")
