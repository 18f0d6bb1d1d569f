"""Activation shaping — Djurisic, Bozanic, Ashok & Liu, "Extremely Simple Activation Shaping for
Out-of-Distribution Detection" (ICLR 2023). Per input, on the penultimate features h ∈ R^D:

    T      = the indices of the k = D − round(D·p/100) largest activations of h
    s₁     = Σ_i h_i
    ASH-B: h'_i = s₁ / k for i ∈ T, 0 elsewhere                    (binarise)
    ASH-S: h'_i = h_i · exp(s₁ / s₂) for i ∈ T, 0 elsewhere,  s₂ = Σ_{i∈T} h_i   (scale)
    s(x)   = −log Σ_k exp (W·h'(x) + b)_k                           (higher = more anomalous)

Applied, as OpenOOD applies it to CIFAR ResNets, to the globally pooled penultimate features.
p = 90 for both, OpenOOD's configuration (``configs/postprocessors/ash.yml``). Nothing is
learned beyond the head's weights.
"""

from __future__ import annotations

import torch

from tripwire.detectors.registry import register_detector
from tripwire.detectors.shaped_energy import ShapedEnergyDetector, kept_count


def _top_activations(h: torch.Tensor, percentile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of each row's activations above its `percentile`-th percentile."""
    return h.topk(kept_count(h.shape[1], percentile), dim=1)


def ash_b(h: torch.Tensor, percentile: float) -> torch.Tensor:
    """ASH-B: the top activations set to the row's sum divided by their count, the rest to 0."""
    values, indices = _top_activations(h, percentile)
    fill = (h.sum(dim=1, keepdim=True) / values.shape[1]).expand_as(values)
    return torch.zeros_like(h).scatter(1, indices, fill)


def ash_s(h: torch.Tensor, percentile: float) -> torch.Tensor:
    """ASH-S: the top activations kept and scaled by exp(s₁ / s₂), the rest set to 0."""
    values, indices = _top_activations(h, percentile)
    ratio = h.sum(dim=1, keepdim=True) / values.sum(dim=1, keepdim=True)
    return torch.zeros_like(h).scatter(1, indices, values * torch.exp(ratio))


@register_detector
class ASHBDetector(ShapedEnergyDetector):
    """Energy after ASH-B: keep the top (100 − p) % activations, binarised to carry the sum.

    Args:
        percentile: p in [0, 100) (OpenOOD: 90).

    Examples:
        >>> det = ASHBDetector().fit(model, train).calibrate(model, val)   # doctest: +SKIP
    """

    name = "ash-b"

    def shape(self, h: torch.Tensor) -> torch.Tensor:
        return ash_b(h, self.percentile)


@register_detector
class ASHSDetector(ShapedEnergyDetector):
    """Energy after ASH-S: keep the top (100 − p) % activations, scaled by exp(s₁ / s₂).

    Args:
        percentile: p in [0, 100) (OpenOOD: 90).

    Examples:
        >>> det = ASHSDetector().fit(model, train).calibrate(model, val)   # doctest: +SKIP
    """

    name = "ash-s"

    def shape(self, h: torch.Tensor) -> torch.Tensor:
        return ash_s(h, self.percentile)
