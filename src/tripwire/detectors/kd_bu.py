"""KD+BU — Feinman, Curtin, Shintre & Gardner, "Detecting Adversarial Samples from Artifacts"
(2017): kernel density on the last hidden layer plus Bayesian (MC-dropout) uncertainty, fused by a
logistic regression trained on clean vs adversarial (FGSM) inputs.

* **KD** of x predicted as class t, with z(·) the last hidden layer and X_t the training inputs of
  class t (true labels), Gaussian kernel of bandwidth σ (MNIST 3.79, CIFAR 0.26, SVHN 1.0):

      log KD(x) = log( 1/|X_t| Σ_{x_i∈X_t} exp(−‖z(x) − z(x_i)‖² / (2σ²)) ) − (D/2)·log(2πσ²)

  (= scikit-learn ``KernelDensity(bandwidth=σ).score_samples``, as the authors' code).
* **BU**: T = 50 stochastic passes with dropout on, softmax outputs p_t:

      U(x) = 1/T Σ_t p_tᵀp_t − p̄ᵀp̄ = Σ_k Var_t(p_tk)         (the paper's formula)

  The T dropout masks are drawn once at `fit` from the seed and reused for every input (T fixed
  "thinned" networks), so an input's score depends neither on its batch nor on global random
  state; masks are applied with forward hooks on the model's ``nn.Dropout*`` modules, the model's
  train/eval mode is never changed.
* Fusion: features (−log KD, U), z-scored with ID statistics, logistic regression with ID = 0 and
  anomaly = 1 (``needs_anomalies``: FGSM of training images in the paper); the score is its
  log-odds (higher = more anomalous). The ID rows are a held-out split that did not enter the KD
  sets.

**A model without dropout** (no ``nn.Dropout*`` module with p > 0, e.g. the zoo's LeNet, trained
with dropout 0): BU is 0 for every input (no passes are run), a warning is logged at `fit`, and
the detector is KD alone through the same logistic regression (``uses_bu_`` is False).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from tripwire.data.base import ImageSet
from tripwire.detectors._baselines import LogisticFusion, in_batches
from tripwire.detectors.base import Detector
from tripwire.detectors.mdl import candidate_layers
from tripwire.detectors.registry import register_detector
from tripwire.errors import InvalidInputError
from tripwire.features import LayerTap, extract_features, model_device

log = logging.getLogger(__name__)

_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_CHANNEL_DROPOUTS = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_MC_CHUNK = 4096  # images per MC forward (passes × batch), bounding memory


def log_kernel_density(z: torch.Tensor, support: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """log of the Gaussian kernel density of each row of `z` (N, D) over `support` (S, D)."""
    d = z.shape[1]
    zf, sf = z.float(), support.to(z.device).float()
    sq = (zf.square().sum(1, keepdim=True) + sf.square().sum(1) - 2 * zf @ sf.T).clamp_min(0)
    lse = torch.logsumexp(-sq.double() / (2 * bandwidth**2), dim=1)
    return lse - math.log(len(support)) - 0.5 * d * math.log(2 * math.pi * bandwidth**2)


def mc_dropout_layers(model: nn.Module) -> list[str]:
    """Names of the model's dropout modules with p > 0."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, _DROPOUTS) and float(getattr(m, "p", 0.0)) > 0
    ]


@register_detector
class KDBUDetector(Detector):
    """Kernel density + MC-dropout uncertainty, fused by logistic regression (Feinman et al.).

    Args:
        bandwidth: σ of the Gaussian kernel (paper: 3.79 for MNIST).
        mc_passes: T, stochastic passes for BU (paper: 50).
        layer: the last hidden layer's module name, or ``"auto"`` (the last layer before the
            logits, e.g. LeNet's ``relu4``).
        max_per_class: at most this many training inputs per class in each KD set (seeded
            subsample; None = all, as the paper).
        holdout_fraction: share of the ID data kept out of the KD sets to fit the regression.
        max_fusion: at most this many ID inputs and anomalies fit the regression.
        seed: seed of the split, subsamples and dropout masks.

    Example:
        >>> adv = make_anomalies("fgsm", model, x_train, y_train).images  # doctest: +SKIP
        >>> det = KDBUDetector().fit(model, mnist_train, anomalies=adv)   # doctest: +SKIP
    """

    name = "kd_bu"
    needs_anomalies = True

    def __init__(
        self,
        bandwidth: float = 3.79,
        mc_passes: int = 50,
        layer: str = "auto",
        max_per_class: int | None = None,
        holdout_fraction: float = 0.1,
        max_fusion: int = 5000,
        seed: int = 0,
    ) -> None:
        self.bandwidth = bandwidth
        self.mc_passes = mc_passes
        self.layer = layer
        self.max_per_class = max_per_class
        self.holdout_fraction = holdout_fraction
        self.max_fusion = max_fusion
        self.seed = seed

    def _validate_params(self) -> None:
        if not self.bandwidth > 0:
            raise ValueError(f"bandwidth must be positive, got {self.bandwidth}")
        if self.mc_passes < 2:
            raise ValueError(f"mc_passes must be ≥ 2, got {self.mc_passes}")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise ValueError(f"max_per_class must be ≥ 1 or None, got {self.max_per_class}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")

    # ------------------------------------------------------------------------------ fitting
    def _fit(self, model: nn.Module, data: ImageSet, anomalies: ImageSet | None) -> None:
        assert anomalies is not None
        kd_set, held = data.split(self.holdout_fraction, seed=self.seed)
        if self.layer == "auto":
            self.layer_ = candidate_layers(model, kd_set.as_float(slice(0, 2)), "mean")[-1]
        else:
            self.layer_ = self.layer
        feats = extract_features(model, kd_set.batches(512), [self.layer_], "none")
        z = feats.layers[self.layer_]
        labels = feats.predicted if kd_set.labels is None else kd_set.labels
        if int(labels.max()) >= self.num_classes_ or int(labels.min()) < 0:
            raise InvalidInputError(
                f"{data.name}: labels must lie in 0…{self.num_classes_ - 1} (the model's classes)"
            )
        self._store_support(z, labels)
        self._draw_masks(model, data.as_float(slice(0, 1)))
        device = model_device(model)
        id_x = held.take(self.max_fusion, seed=self.seed).as_float()
        anom_x = anomalies.take(self.max_fusion, seed=self.seed + 1).as_float()

        def features(x: torch.Tensor) -> torch.Tensor:
            return in_batches(lambda b: self.raw_features(model, b.to(device))[0], x, 256)

        self.fusion_ = LogisticFusion.fit(features(id_x), features(anom_x))

    def _store_support(self, z: torch.Tensor, labels: torch.Tensor) -> None:
        g = torch.Generator().manual_seed(self.seed)
        per_class = []
        for c in range(self.num_classes_):
            idx = torch.nonzero(labels == c).flatten()
            if self.max_per_class is not None and len(idx) > self.max_per_class:
                idx = idx[torch.randperm(len(idx), generator=g)[: self.max_per_class]]
            per_class.append(z[idx].float())
        s = max(1, max(len(p) for p in per_class))
        self.support_ = torch.zeros(self.num_classes_, s, z.shape[1])
        self.counts_ = torch.tensor([len(p) for p in per_class], dtype=torch.long)
        for c, p in enumerate(per_class):
            self.support_[c, : len(p)] = p

    def _draw_masks(self, model: nn.Module, sample: torch.Tensor) -> None:
        self.mc_layers_ = mc_dropout_layers(model)
        self.masks_: dict[str, torch.Tensor] = {}
        if not self.mc_layers_:
            log.warning(
                "kd_bu: the model has no dropout layer with p > 0, so Bayesian uncertainty (BU) "
                "is 0 for every input and the detector uses kernel density (KD) alone"
            )
            return
        modules = dict(model.named_modules())
        shapes: dict[str, tuple[int, ...]] = {}

        def grab(name: str):  # type: ignore[no-untyped-def]
            def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
                shapes[name] = tuple(out.shape[1:])

            return hook

        handles = [modules[n].register_forward_hook(grab(n)) for n in self.mc_layers_]
        try:
            with torch.no_grad():
                model(sample.to(model_device(model)))
        finally:
            for h in handles:
                h.remove()
        g = torch.Generator().manual_seed(self.seed + 7)
        for name in self.mc_layers_:
            m = modules[name]
            p = float(m.p)  # type: ignore[arg-type]
            shape = shapes[name]
            if isinstance(m, _CHANNEL_DROPOUTS):
                shape = (shape[0],) + (1,) * (len(shape) - 1)
            keep = torch.rand((self.mc_passes, *shape), generator=g) >= p
            self.masks_[name] = keep.float() / (1 - p)

    # ------------------------------------------------------------------------------ scoring
    def raw_features(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 2) features (−log KD, BU) and the predicted classes, for a valid device batch."""
        with torch.no_grad(), LayerTap(model, [self.layer_], "none") as tap:
            logits = model(x)
        pred = logits.argmax(dim=1)
        z = tap.outputs[self.layer_]
        neg_kd = torch.zeros(len(x), dtype=torch.float64, device=x.device)
        for c in torch.unique(pred).tolist():
            rows = pred == c
            n = int(self.counts_[c])
            if n == 0:  # no training input of this class: the lowest density there is
                neg_kd[rows] = float("inf")
                continue
            support = self.support_[c, :n].to(x.device)
            neg_kd[rows] = -log_kernel_density(z[rows], support, self.bandwidth)
        neg_kd = torch.nan_to_num(neg_kd, posinf=torch.finfo(torch.float32).max)
        return torch.stack([neg_kd, self.uncertainty(model, x)], dim=1), pred

    def uncertainty(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """BU: Σ_k Var_t softmax(f_t(x))_k over the T fixed dropout masks (0 without dropout)."""
        if not self.mc_layers_:
            return torch.zeros(len(x), dtype=torch.float64, device=x.device)
        t_total = self.mc_passes
        per_chunk = max(1, _MC_CHUNK // len(x))
        probs = []
        modules = dict(model.named_modules())
        for start in range(0, t_total, per_chunk):
            t = min(per_chunk, t_total - start)
            handles = [
                modules[name].register_forward_hook(self._mask_hook(name, start, t, len(x)))
                for name in self.mc_layers_
            ]
            try:
                with torch.no_grad():
                    out = model(x.repeat(t, 1, 1, 1))
            finally:
                for h in handles:
                    h.remove()
            probs.append(torch.softmax(out.double(), dim=1).view(t, len(x), -1))
        p = torch.cat(probs)  # T×N×K
        return p.var(dim=0, unbiased=False).sum(dim=1)

    def _mask_hook(self, name: str, start: int, t: int, n: int):  # type: ignore[no-untyped-def]
        def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> torch.Tensor:
            mask = self.masks_[name][start : start + t].to(out.device, out.dtype)
            shaped = out.view(t, n, *out.shape[1:]) * mask.unsqueeze(1)
            return shaped.view(out.shape)

        return hook

    def _score_batch(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, pred = self.raw_features(model, x)
        return self.fusion_.score(feats), pred

    # ------------------------------------------------------------------------------ state
    @property
    def uses_bu_(self) -> bool:
        """Whether Bayesian uncertainty is used (the model had dropout with p > 0)."""
        return bool(self.mc_layers_)

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        out = {"support": self.support_, "counts": self.counts_, **self.fusion_.tensors("fusion")}
        out.update({f"mask.{name}": m for name, m in self.masks_.items()})
        return out

    def _state_meta(self) -> dict[str, Any]:
        return {"layer": self.layer_, "mc_layers": self.mc_layers_}

    def _set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.layer_ = str(meta["layer"])
        self.mc_layers_ = [str(n) for n in meta["mc_layers"]]
        self.support_, self.counts_ = tensors["support"], tensors["counts"]
        self.fusion_ = LogisticFusion.from_tensors(tensors, "fusion")
        self.masks_ = {name: tensors[f"mask.{name}"] for name in self.mc_layers_}
