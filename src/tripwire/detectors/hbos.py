"""HBOS, the histogram-based outlier score (Goldstein & Dengel, "Histogram-based Outlier Score
(HBOS): A fast Unsupervised Anomaly Detection Algorithm", KI 2012), in torch.

One histogram per feature d, fitted on in-distribution data, with its bin heights normalised so
the highest bin is 1; the score of z is

    HBOS(z) = Σ_d log(1 / hist_d(z_d))

(higher = more anomalous). Empty bins get a pseudo-count of `alpha`. Values outside a feature's
fitted range get the score of an empty bin plus a Gaussian tail ½·((z_d − edge)/σ_d)², so that
further-out values keep ranking further out instead of tying (the original assigns them all the
same small density).

Examples:
    >>> h = Hbos.fit(torch.randn(1000, 3))
    >>> bool(h.score(torch.tensor([[0.0, 0.0, 0.0]])) < h.score(torch.tensor([[6.0, 0.0, 0.0]])))
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Hbos:
    """Fitted per-feature histograms.

    Attributes:
        lo: (D,) left edge of each feature's histogram.
        width: (D,) bin width of each feature.
        neg_log_height: (D, B) −log of the normalised bin heights (≥ 0).
        floor: (D,) −log height of an empty bin, used outside the range too.
        sigma: (D,) standard deviation of each feature (scale of the tail penalty).
    """

    lo: torch.Tensor
    width: torch.Tensor
    neg_log_height: torch.Tensor
    floor: torch.Tensor
    sigma: torch.Tensor

    @classmethod
    def fit(cls, z: torch.Tensor, bins: int | None = None, alpha: float = 0.5) -> Hbos:
        """Fit on N×D in-distribution features; `bins` defaults to ⌈√N⌉ (Goldstein & Dengel)."""
        if z.ndim != 2 or z.shape[0] < 2:
            raise ValueError(f"HBOS needs an N×D matrix with N ≥ 2, got {tuple(z.shape)}")
        z = z.double()
        n, d = z.shape
        b = bins or max(5, math.ceil(math.sqrt(n)))
        lo, hi = z.min(dim=0).values, z.max(dim=0).values
        width = ((hi - lo) / b).clamp_min(1e-12)
        idx = ((z - lo) / width).floor().long().clamp(0, b - 1)
        counts = torch.zeros(d, b, dtype=torch.float64)
        counts.scatter_add_(1, idx.T.contiguous(), torch.ones(d, n, dtype=torch.float64))
        counts = counts + alpha
        height = counts / counts.max(dim=1, keepdim=True).values
        floor = -torch.log(alpha / counts.max(dim=1).values)
        # Floor: a feature that barely varies on ID data would otherwise blow the tail up.
        std = z.std(dim=0)
        sigma = std.clamp_min(max(1e-2 * float(std.mean()), 1e-12))
        return cls(lo, width, -torch.log(height), floor, sigma)

    @property
    def bins(self) -> int:
        """Number of bins per feature."""
        return int(self.neg_log_height.shape[1])

    def terms(self, z: torch.Tensor) -> torch.Tensor:
        """Per-feature scores N×D, log(1 / hist_d(z_d)) (with the tail penalty); sum = HBOS."""
        z = z.to(self.lo.device, torch.float64)
        pos = (z - self.lo) / self.width
        idx = pos.floor().long().clamp(0, self.bins - 1)
        inside = torch.gather(
            self.neg_log_height.unsqueeze(0).expand(z.shape[0], -1, -1), 2, idx.unsqueeze(2)
        ).squeeze(2)
        hi = self.lo + self.width * self.bins
        excess = torch.clamp(self.lo - z, min=0) + torch.clamp(z - hi, min=0)
        outside = self.floor + 0.5 * (excess / self.sigma) ** 2
        return torch.where((pos < 0) | (pos >= self.bins), outside, inside)

    def score(self, z: torch.Tensor) -> torch.Tensor:
        """HBOS of each row of N×D features, (N,) float64; higher = more anomalous."""
        return self.terms(z).sum(dim=1)

    def to_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """The state as named tensors (for safetensors)."""
        return {
            f"{prefix}lo": self.lo,
            f"{prefix}width": self.width,
            f"{prefix}neg_log_height": self.neg_log_height,
            f"{prefix}floor": self.floor,
            f"{prefix}sigma": self.sigma,
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str) -> Hbos:
        """Inverse of `to_tensors`."""
        return cls(
            *(tensors[f"{prefix}{k}"] for k in ("lo", "width", "neg_log_height", "floor", "sigma"))
        )
