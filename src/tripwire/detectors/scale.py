"""SCALE — Xu, Chen, Franchi & Yao, "Scaling for Training Time and Post-hoc Out-of-distribution
Detection Enhancement" (ICLR 2024). Per input, on the penultimate features h ∈ R^D:

    s₁     = Σ_i h_i,   s₂ = the sum of the k = D − round(D·p/100) largest activations of h
    h'     = h · exp(s₁ / s₂)                 (every activation kept, none pruned)
    s(x)   = −log Σ_k exp (W·h'(x) + b)_k     (higher = more anomalous)

ASH-S (`tripwire.detectors.ash`) without its pruning. p = 85, OpenOOD's configuration
(``configs/postprocessors/scale.yml``). Nothing is learned beyond the head's weights.
"""

from __future__ import annotations

import torch

from tripwire.detectors.params import Percentile
from tripwire.detectors.registry import register_detector
from tripwire.detectors.shaped_energy import ShapedEnergyDetector, kept_count


def scale_activations(h: torch.Tensor, percentile: float) -> torch.Tensor:
    """h · exp(s₁ / s₂) per row (s₂: the sum of the row's top activations)."""
    top = h.topk(kept_count(h.shape[1], percentile), dim=1).values
    return h * torch.exp(h.sum(dim=1, keepdim=True) / top.sum(dim=1, keepdim=True))


@register_detector
class SCALEDetector(ShapedEnergyDetector):
    """Energy after scaling the penultimate features by exp(s₁ / s₂) (Xu et al. 2024).

    Args:
        percentile: p in [0, 100) (OpenOOD: 85).

    Examples:
        >>> det = SCALEDetector().fit(model, train).calibrate(model, val)   # doctest: +SKIP
    """

    name = "scale"

    percentile: Percentile = 85.0

    def shape(self, h: torch.Tensor) -> torch.Tensor:
        return scale_activations(h, self.percentile)
