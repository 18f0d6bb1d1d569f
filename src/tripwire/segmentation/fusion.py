"""Fusing per-image anomaly scores of different detectors, each normalised on ID data only.

Two scores of different kinds (DAAIN's HBOS sum, in nats of a histogram density, and a
segmenter's mean per-pixel entropy, in nats of a softmax) cannot be added as they are. Each
score s_j is first mapped to a common scale fitted on **held-out ID inputs only** (no anomaly is
needed or seen):

* ``"pvalue"`` (default): the conformal p-value of s_j among the m ID calibration scores
  c_{j,1..m},  p_j(s) = (1 + #{i : c_{j,i} ≥ s}) / (m + 1),  mapped to t_j = −log p_j(s) ∈
  [0, log(m + 1)]. Distribution-free: whatever the score's units and tail shape, on ID inputs
  t_j has the same distribution for every detector (p_j is uniform on ID), so one detector's
  heavy tail cannot drown the other's signal. It saturates above the largest calibration score.
* ``"zscore"``: t_j = (s − mean_j) / sd_j of the ID calibration scores (keeps the distances
  beyond the ID range, but assumes comparable, roughly Gaussian tails).

and the normalised terms are combined by

* ``"sum"`` (default): s = Σ_j w_j t_j  — with p-values and w = 1 this is Fisher's method
  (−2 Σ log p_j, up to the factor 2): evidence from both detectors adds up;
* ``"max"``: s = max_j w_j t_j  — with p-values Tippett's min-p: the most alarmed detector wins.

Higher = more anomalous, as every tripwire score.

Examples:
    >>> fusion = ScoreFusion().fit(daain_id, entropy_id)   # held-out ID  # doctest: +SKIP
    >>> fused = fusion.score(daain_x, entropy_x)            # (N,) float64  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Self

import torch

from tripwire.errors import InvalidInputError, NotFittedError

NORMALISATIONS = ("pvalue", "zscore")
COMBINATIONS = ("sum", "max")


class ScoreFusion:
    """One per-image score from several detectors' scores, each normalised on ID data only.

    Args:
        normalise: ``"pvalue"`` (t = −log of the conformal ID p-value) or ``"zscore"``.
        combine: ``"sum"`` (Fisher's method with p-values) or ``"max"`` (Tippett's min-p).
        weights: one non-negative weight per score (default: all 1).

    Examples:
        >>> cal = [torch.randn(200), torch.rand(200)]                  # two scores on ID
        >>> fusion = ScoreFusion().fit(*cal)
        >>> fusion.score(torch.tensor([0.0, 9.0]), torch.tensor([0.5, 2.0])).shape
        torch.Size([2])
    """

    def __init__(
        self,
        normalise: str = "pvalue",
        combine: str = "sum",
        weights: Sequence[float] | None = None,
    ) -> None:
        self.normalise = normalise
        self.combine = combine
        self.weights = weights
        self.calibration_: list[torch.Tensor] | None = None

    def fit(self, *id_scores: torch.Tensor) -> Self:
        """Fit the normalisation of each score on its values on held-out ID inputs, (m,) each."""
        if self.normalise not in NORMALISATIONS:
            raise InvalidInputError(
                f"normalise must be one of {NORMALISATIONS}, got {self.normalise!r}"
            )
        if self.combine not in COMBINATIONS:
            raise InvalidInputError(f"combine must be one of {COMBINATIONS}, got {self.combine!r}")
        if not id_scores:
            raise InvalidInputError("fit needs the ID scores of at least one detector")
        if self.weights is not None and (
            len(self.weights) != len(id_scores) or any(w < 0 for w in self.weights)
        ):
            raise InvalidInputError(
                f"weights must be {len(id_scores)} non-negative numbers, got {self.weights!r}"
            )
        cal = [self._check(s, f"ID scores #{j}") for j, s in enumerate(id_scores)]
        for j, c in enumerate(cal):
            if len(c) < 2:
                raise InvalidInputError(f"ID scores #{j}: need at least 2 values, got {len(c)}")
            if self.normalise == "zscore" and float(c.std()) <= 0:
                raise InvalidInputError(f"ID scores #{j} are constant: no z-score possible")
        self.calibration_ = [c.sort().values for c in cal]
        return self

    def transform(self, *scores: torch.Tensor) -> torch.Tensor:
        """The normalised terms t_j of each score, K×N float64."""
        if self.calibration_ is None:
            raise NotFittedError("ScoreFusion is not fitted: call fit(*id_scores) first")
        if len(scores) != len(self.calibration_):
            raise InvalidInputError(
                f"expected {len(self.calibration_)} scores (as in fit), got {len(scores)}"
            )
        xs = [self._check(s, f"scores #{j}") for j, s in enumerate(scores)]
        if len({len(x) for x in xs}) != 1:
            raise InvalidInputError(f"scores differ in length: {[len(x) for x in xs]}")
        return torch.stack(
            [self._normalise(c, x) for c, x in zip(self.calibration_, xs, strict=True)]
        )

    def score(self, *scores: torch.Tensor) -> torch.Tensor:
        """The fused score (N,) float64 of inputs whose detectors' scores are `scores`."""
        t = self.transform(*scores)
        w = torch.ones(len(t), dtype=torch.float64)
        if self.weights is not None:
            w = torch.tensor([float(v) for v in self.weights], dtype=torch.float64)
        t = t * w[:, None]
        return t.sum(0) if self.combine == "sum" else t.max(0).values

    def _normalise(self, cal: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.normalise == "zscore":
            return (x - cal.mean()) / cal.std()
        m = len(cal)
        # #{i : c_i ≥ s} = m − #{i : c_i < s}; searchsorted(left) counts c_i < s.
        at_least = m - torch.searchsorted(cal, x, right=False)
        return math.log(m + 1) - torch.log1p(at_least.double())

    @staticmethod
    def _check(s: torch.Tensor, what: str) -> torch.Tensor:
        s = torch.as_tensor(s)
        if s.ndim != 1:
            raise InvalidInputError(
                f"{what}: expected one score per input, shape (N,), got {tuple(s.shape)}"
            )
        s = s.detach().double().cpu()
        if not bool(torch.isfinite(s).all()):
            raise InvalidInputError(f"{what}: contains NaN or infinite values")
        return s
