"""Mahalanobis distance to class means — Lee, Lee, Lee & Shin, "A Simple Unified Framework for
Detecting Out-of-Distribution Samples and Adversarial Attacks" (NeurIPS 2018).

For a layer ℓ with (spatially mean-pooled) features z_ℓ(x), class means μ_{ℓ,c} over the training
inputs of class c and ONE covariance Σ_ℓ shared by all classes (tied, estimated from the
class-centred features):

    M_ℓ(x) = min_c (z_ℓ(x) − μ_{ℓ,c})ᵀ Σ_ℓ⁻¹ (z_ℓ(x) − μ_{ℓ,c})        (squared distance)

which is the anomaly score (higher = more anomalous; Lee et al.'s confidence is −M_ℓ/2).

* Default: the logit layer alone, as Zhao et al. compared against ("logits" = the model output).
* ``layers=[...]``: the feature ensemble. Per-layer scores are combined by a logistic regression
  on validation anomalies when ``anomalies`` are given to `fit` (Lee et al.), else by the sum of
  scores standardised with held-out ID statistics.
* ``epsilon``: Lee et al.'s input pre-processing x̃ = clip₀¹(x − ε·sign(∇ₓ M_ℓ(x))), per layer;
  ``"auto"`` chooses ε from a grid on validation anomalies (given ones, else synthetic proxies —
  never test sets).
* Σ_ℓ is the maximum-likelihood estimate (class-centred scatter / N; Lee et al.'s, and
  pytorch-ood's up to its scale) by default, ``shrinkage="none"``. It was chosen on validation
  data only (held-out training images and anomalies made from training images, no test set): on
  ResNet-44's logits the ML Σ gave 85.99 mean AUROC over 13 validation sets against 80.39 for
  Ledoit–Wolf and OAS; on LeNet-5's the three agree to 0.02 points. ``"ledoit-wolf"`` or
  ``"oas"`` shrink Σ by an amount estimated from the samples and the dimension — for layers
  whose ML Σ is singular (more dimensions than images).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from tripwire.batching import in_batches
from tripwire.data.base import ImageSet
from tripwire.detectors._baselines import (
    EPSILON_GRID,
    LogisticFusion,
    choose_epsilon,
    validation_sets,
)
from tripwire.detectors.base import Detector
from tripwire.detectors.params import Grid, Names, NonNegative, PositiveInt
from tripwire.detectors.registry import register_detector
from tripwire.detectors.state import learned
from tripwire.errors import InvalidInputError
from tripwire.features import LayerTap, Pooling, extract_features, model_device

LOGITS = "logits"
Shrinkage = Literal["ledoit-wolf", "oas", "none"]
ESTIMATORS = {"ledoit-wolf": "LedoitWolf", "oas": "OAS", "none": "EmpiricalCovariance"}
Combine = Literal["auto", "sum", "logistic"]


def tied_gaussian(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, shrinkage: str = "none"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class means (K, D), a factor L of the shared precision Σ⁺ = L Lᵀ (D, D), and which
    classes had samples (K,), all float64. Σ is the maximum-likelihood estimate (class-centred
    scatter / N) with ``"none"``, or shrunk by Ledoit–Wolf or OAS; Σ⁺ is scikit-learn's
    pseudo-inverse (the inverse where Σ is invertible; a singular Σ — a unit that never fires —
    ignores the directions it has no spread in, as Lee et al.'s code does), and L = V·√Λ from
    its eigendecomposition."""
    x = features.detach().double().cpu().numpy()
    y = labels.cpu().numpy()
    d = x.shape[1]
    means = np.zeros((num_classes, d))
    present = np.zeros(num_classes, dtype=bool)
    for c in range(num_classes):
        if (y == c).any():
            means[c] = x[y == c].mean(axis=0)
            present[c] = True
    centred = x - means[y]
    from sklearn import covariance  # loads in ≈ 1 s: imported where used (CLI start-up)

    estimator = getattr(covariance, ESTIMATORS[shrinkage])
    precision = estimator(assume_centered=True).fit(centred).get_precision()
    eigenvalues, eigenvectors = np.linalg.eigh(0.5 * (precision + precision.T))
    chol = eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))
    return torch.from_numpy(means), torch.from_numpy(chol), torch.from_numpy(present)


def min_mahalanobis(
    features: torch.Tensor, means: torch.Tensor, chol: torch.Tensor, present: torch.Tensor
) -> torch.Tensor:
    """min over present classes c of (z − μ_c)ᵀ L Lᵀ (z − μ_c), per row of `features` (N, D)."""
    dev = features.device
    diff = features.double().unsqueeze(1) - means.to(dev).unsqueeze(0)  # N×K×D
    d2 = (diff @ chol.to(dev)).square().sum(dim=2)  # N×K
    d2 = d2.masked_fill(~present.to(dev).unsqueeze(0), float("inf"))
    return d2.amin(dim=1)


@register_detector
class MahalanobisDetector(Detector):
    """Minimum Mahalanobis distance to class means under a tied covariance (Lee et al. 2018).

    Args:
        layers: module names (see `tripwire.features.list_layers`) and/or ``"logits"``.
        pooling: reduction of conv maps (Lee et al.: ``"mean"``).
        shrinkage: covariance estimator: ``"none"`` (the maximum-likelihood Σ, unshrunk),
            ``"ledoit-wolf"`` or ``"oas"``.
        epsilon: input pre-processing magnitude (0 = none), or ``"auto"`` to pick it from
            `epsilons` on validation anomalies.
        epsilons: the grid for ``"auto"`` (Lee et al.'s, in [0, 1] pixel units).
        combine: how several layers are combined: ``"logistic"`` (needs ``anomalies`` at fit),
            ``"sum"`` of ID-standardised scores, or ``"auto"`` (logistic when anomalies are given).
        validation_size: ID images (and anomalies) used for standardising, combining and ε.
        seed: seed of the validation draw and proxies.

    Examples:
        >>> det = MahalanobisDetector().fit(model, mnist_train)        # doctest: +SKIP
        >>> ens = MahalanobisDetector(layers=("relu1", "relu2", "logits"))  # doctest: +SKIP
    """

    name = "mahalanobis"

    layers: Names = (LOGITS,)
    pooling: Pooling = "mean"
    shrinkage: Shrinkage = "none"
    epsilon: NonNegative | Literal["auto"] = 0.0
    epsilons: Grid = EPSILON_GRID
    combine: Combine = "auto"
    validation_size: PositiveInt = 1000
    seed: int = 0

    layers_: list[str] = learned()
    combine_: str = learned()
    epsilon_: float = learned()
    criterion_: dict[str, float] = learned()
    present_: torch.Tensor = learned()
    layer_mean_: torch.Tensor = learned()
    layer_std_: torch.Tensor = learned()
    fusion_: LogisticFusion | None = learned()

    def reads_layers(self) -> bool:
        return any(layer != LOGITS for layer in self.layers)

    # ------------------------------------------------------------------------------ fitting
    def _fit(self, model: nn.Module, data: ImageSet, anomalies: ImageSet | None) -> None:
        self.layers_ = list(self.layers)
        hooked = [name for name in self.layers_ if name != LOGITS]
        feats = extract_features(model, data.batches(512), hooked, self.pooling)
        labels = feats.predicted if data.labels is None else data.labels
        if int(labels.max()) >= self.num_classes_ or int(labels.min()) < 0:
            raise InvalidInputError(
                f"{data.name}: labels must lie in 0…{self.num_classes_ - 1} (the model's classes)"
            )
        self.means_, self.chol_ = [], []
        for name in self.layers_:
            f = feats.logits if name == LOGITS else feats.layers[name]
            means, chol, present = tied_gaussian(f, labels, self.num_classes_, self.shrinkage)
            self.means_.append(means)
            self.chol_.append(chol)
        self.present_ = present
        combine = self.combine
        if combine == "auto":
            combine = "logistic" if anomalies is not None else "sum"
        if combine == "logistic" and anomalies is None:
            raise InvalidInputError("combine='logistic' needs anomalies=… at fit")
        self.combine_ = "single" if len(self.layers_) == 1 else combine
        self.layer_mean_ = torch.zeros(len(self.layers_), dtype=torch.float64)
        self.layer_std_ = torch.ones(len(self.layers_), dtype=torch.float64)
        self.fusion_ = None
        self.criterion_: dict[str, float] = {}
        self.epsilon_ = 0.0 if self.epsilon == "auto" else float(self.epsilon)
        if self.combine_ == "single" and self.epsilon != "auto":
            return
        device = model_device(model)
        id_x, sets = validation_sets(data, anomalies, self.validation_size, self.seed)

        def layer_scores(x: torch.Tensor, eps: float) -> torch.Tensor:
            return in_batches(lambda b: self.layer_scores(model, b.to(device), eps)[0], x)

        self._standardise(layer_scores(id_x, 0.0))
        if self.epsilon == "auto":
            self.epsilon_, self.criterion_ = choose_epsilon(
                lambda x, e: self._combine_scores(layer_scores(x, e)), id_x, sets, self.epsilons
            )
        s_id = layer_scores(id_x, self.epsilon_)
        self._standardise(s_id)
        if self.combine_ == "logistic":
            self.fusion_ = LogisticFusion.fit(s_id, layer_scores(sets["given"], self.epsilon_))

    def _standardise(self, s_id: torch.Tensor) -> None:
        if self.combine_ != "single":
            self.layer_mean_ = s_id.mean(dim=0)
            self.layer_std_ = s_id.std(dim=0).clamp_min(1e-12)

    # ------------------------------------------------------------------------------ scoring
    def layer_scores(
        self, model: nn.Module, x: torch.Tensor, epsilon: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-layer scores M_ℓ (N, L), each after its own pre-processing by ε, and ŷ (N,).

        `x` must be a valid batch on the model's device. ε defaults to the fitted one.
        """
        eps = self.epsilon_ if epsilon is None else epsilon
        hooked = [name for name in self.layers_ if name != LOGITS]
        grad = torch.enable_grad() if eps > 0 else torch.no_grad()
        with grad, LayerTap(model, hooked, self.pooling) as tap:
            xg = x.detach().clone().requires_grad_(eps > 0)
            logits = model(xg)
            pred = logits.argmax(dim=1).detach()
            outs = {**tap.outputs, LOGITS: logits}
            clean = [self._distance(i, outs[name]) for i, name in enumerate(self.layers_)]
            if eps == 0:
                return torch.stack([c.detach() for c in clean], dim=1), pred
            last = len(clean) - 1
            grads = [
                torch.autograd.grad(c.sum(), xg, retain_graph=i < last)[0]
                for i, c in enumerate(clean)
            ]
        scores = []
        with torch.no_grad(), LayerTap(model, hooked, self.pooling) as tap:
            for i, (name, g) in enumerate(zip(self.layers_, grads, strict=True)):
                logits_t = model((x - eps * g.sign()).clamp(0.0, 1.0))
                out = logits_t if name == LOGITS else tap.outputs[name]
                scores.append(self._distance(i, out))
        return torch.stack(scores, dim=1), pred

    def _distance(self, i: int, features: torch.Tensor) -> torch.Tensor:
        return min_mahalanobis(features, self.means_[i], self.chol_[i], self.present_)

    def _combine_scores(self, s: torch.Tensor) -> torch.Tensor:
        if self.combine_ == "single":
            return s[:, 0]
        if self.combine_ == "logistic" and self.fusion_ is not None:
            return self.fusion_.score(s)
        dev = s.device
        return ((s - self.layer_mean_.to(dev)) / self.layer_std_.to(dev)).sum(dim=1)

    def _score_batch(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, pred = self.layer_scores(model, x)
        return self._combine_scores(s), pred

    def fit_summary(self) -> dict[str, str]:
        """The input-step size ε that `fit` chose (``epsilon="auto"``); {} when it was given."""
        return {"epsilon": f"{self.epsilon_:g}"} if self.epsilon == "auto" else {}

    # ------------------------------------------------------------------------------ state
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        out = super()._state_tensors()
        for i in range(len(self.layers_)):
            out[f"l{i}.means"] = self.means_[i]
            out[f"l{i}.chol"] = self.chol_[i]
        return out

    def _set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        super()._set_state(tensors, meta)
        self.means_ = [tensors[f"l{i}.means"] for i in range(len(self.layers_))]
        self.chol_ = [tensors[f"l{i}.chol"] for i in range(len(self.layers_))]
