"""Pieces the baseline detectors share: logistic fusion, validation sets, ε selection.

* `LogisticFusion` — the logistic regression that KD+BU (Feinman et al. 2017), LID (Ma et al.
  2018) and Mahalanobis's feature ensemble (Lee et al. 2018) put on top of their per-feature
  scores: features z-scored with the mean and standard deviation of the **ID** rows, then an
  L2 logistic regression (C = 1, balanced class weights) with ID = 0 and anomaly = 1. The anomaly
  score is the fitted log-odds w·z + b (higher = more anomalous), computed with torch. The papers'
  code used ``LogisticRegressionCV``; on a handful of z-scored features the cross-validated C
  changes little and costs 10–50× the time (lbfgs crawls on nearly separable data at large C).
* `validation_sets` — held-out ID images plus validation anomalies: the explicit ones given to
  `fit`, else synthetic proxies made from ID images (`tripwire.detectors.proxies`). Never a test
  set.
* `choose_epsilon` — the input-perturbation magnitude of ODIN / Mahalanobis pre-processing that
  separates those validation sets best (mean AUROC; ties go to the smaller ε).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tripwire.data.base import ImageSet
from tripwire.detectors.proxies import make_proxies
from tripwire.errors import InvalidInputError
from tripwire.metrics import auroc

# The ε grid of Liang et al. (ODIN) / Lee et al. (Mahalanobis pre-processing) for [0, 1] inputs.
EPSILON_GRID: tuple[float, ...] = (0.0, 0.0005, 0.001, 0.0014, 0.002, 0.0024, 0.005, 0.01)

_TIE = 1e-3


@dataclass
class LogisticFusion:
    """z-scoring (by ID statistics) followed by a logistic regression, as tensors.

    Attributes:
        mean, std: (F,) per-feature mean and standard deviation of the ID rows (std of a constant
            feature is set to 1, so it contributes nothing).
        coef: (F,) weights; intercept: (1,) bias.
    """

    mean: torch.Tensor
    std: torch.Tensor
    coef: torch.Tensor
    intercept: torch.Tensor

    @classmethod
    def fit(cls, id_features: torch.Tensor, anomaly_features: torch.Tensor) -> LogisticFusion:
        """Fit on ID rows (label 0) and anomaly rows (label 1), each (N, F)."""
        if len(id_features) < 2 or len(anomaly_features) < 2:
            raise InvalidInputError(
                "logistic fusion needs at least 2 ID and 2 anomalous inputs, got "
                f"{len(id_features)} and {len(anomaly_features)}"
            )
        a = id_features.detach().double().cpu().numpy()
        b = anomaly_features.detach().double().cpu().numpy()
        mean = a.mean(axis=0)
        std = a.std(axis=0)
        std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)
        x = (np.concatenate([a, b]) - mean) / std
        y = np.concatenate([np.zeros(len(a)), np.ones(len(b))])
        from sklearn.linear_model import LogisticRegression  # slow import: where used

        lr = LogisticRegression(C=1.0, max_iter=1000, class_weight="balanced").fit(x, y)
        f64 = torch.float64
        return cls(
            mean=torch.tensor(mean, dtype=f64),
            std=torch.tensor(std, dtype=f64),
            coef=torch.tensor(lr.coef_[0], dtype=f64),
            intercept=torch.tensor(lr.intercept_, dtype=f64),
        )

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """Log-odds of "anomaly" for rows (N, F); higher = more anomalous."""
        dev = features.device
        z = (features.double() - self.mean.to(dev)) / self.std.to(dev)
        return z @ self.coef.to(dev) + self.intercept.to(dev)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The state to store (`tripwire.detectors.state`): tensors by name, no other values."""
        return {n: getattr(self, n) for n in ("mean", "std", "coef", "intercept")}, {}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> LogisticFusion:
        """Inverse of `state`."""
        return cls(*(tensors[n] for n in ("mean", "std", "coef", "intercept")))


def validation_sets(
    data: ImageSet, anomalies: ImageSet | None, size: int, seed: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`size` ID images drawn from `data` (seeded) and the validation anomalies.

    The anomalies are the explicit ones (up to `size` of them, under the name ``"given"``) or, when
    none are given, every synthetic proxy of `tripwire.detectors.proxies` made from the ID images.
    """
    id_x = data.take(size, seed=seed).as_float()
    if anomalies is not None:
        return id_x, {"given": anomalies.take(size, seed=seed + 1).as_float()}
    return id_x, make_proxies(id_x, seed=seed)


def choose_epsilon(
    score: Callable[[torch.Tensor, float], torch.Tensor],
    id_x: torch.Tensor,
    anomaly_sets: dict[str, torch.Tensor],
    epsilons: Sequence[float],
) -> tuple[float, dict[str, float]]:
    """The ε of `epsilons` whose scores best separate `id_x` from the anomaly sets.

    Args:
        score: ``score(x, eps)`` → anomaly scores (N,) of images x under perturbation ε.
        id_x: validation ID images; anomaly_sets: named validation anomalies.
        epsilons: the grid.

    Returns:
        (chosen ε, mean AUROC per ε as ``{str(ε): auroc}``). Ties within 0.001 go to the smaller ε.
    """
    criterion: dict[str, float] = {}
    for eps in sorted(epsilons):
        s_id = score(id_x, eps)
        criterion[repr(float(eps))] = float(
            np.mean([auroc(s_id, score(x, eps)) for x in anomaly_sets.values()])
        )
    best = max(criterion.values())
    chosen = next(float(e) for e in criterion if criterion[e] >= best - _TIE)
    return chosen, criterion
