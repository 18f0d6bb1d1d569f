"""Rectified activations — Sun, Guo & Li, "ReAct: Out-of-distribution Detection With Rectified
Activations" (NeurIPS 2021):

    c      = the p-th percentile of all penultimate activations of the ID fit images
    h'(x)  = min(h(x), c)                    (element-wise)
    s(x)   = −log Σ_k exp (W·h'(x) + b)_k    (energy of the rectified logits; higher = more
                                             anomalous)

p = 90, the paper's default (its Table 5 ablation; OpenOOD's configuration too). c is computed on
the detector's fit images, i.e. ID training images, as in the paper.
"""

from __future__ import annotations

import numpy as np
import torch

from tripwire.detectors.registry import register_detector
from tripwire.detectors.shaped_energy import ShapedEnergyDetector
from tripwire.detectors.state import learned


@register_detector
class ReActDetector(ShapedEnergyDetector):
    """Energy after clipping the penultimate activations at their ID p-th percentile.

    Args:
        percentile: p in [0, 100) (paper: 90).

    Examples:
        >>> det = ReActDetector().fit(model, train).calibrate(model, val)   # doctest: +SKIP
    """

    name = "react"

    clip_: float = learned()

    def _fit_shape(self, h: torch.Tensor) -> None:
        self.clip_ = float(np.percentile(h.numpy(), self.percentile))

    def shape(self, h: torch.Tensor) -> torch.Tensor:
        return h.clamp(max=self.clip_)
