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
  train/eval mode is never changed. The layers before the first dropout layer are the same in
  every pass, so they run once: that layer's hook copies its output T times (batch N → T·N) and
  only the layers after it run T times (VGG-16: the fc head, instead of 50 whole forward passes),
  with one more pass, every mask 1, that gives the KD features and the prediction.
  `fit` checks this against T whole passes on two inputs; where it does not hold (e.g. a skip
  connection around a dropout layer meets the N-row batch), T whole passes are run.
* Fusion: features (−log KD, U), z-scored with ID statistics, logistic regression with ID = 0 and
  anomaly = 1 (``needs_anomalies``: FGSM of training images in the paper); the score is its
  log-odds (higher = more anomalous). The ID rows are a held-out split that did not enter the KD
  sets.

**A model without dropout** (no ``nn.Dropout*`` module with p > 0, e.g. the zoo's LeNet, trained
with dropout 0): BU is 0 for every input (no passes are run), a warning is logged at `fit`, and
the detector is KD alone through the same logistic regression (``uses_bu_`` is False).

**Deviation, for speed**: each KD set keeps at most ``max_per_class`` = 2,000 seeded training
inputs by default (the paper: all of them); chosen on validation data only (held-out training
images and their FGSM), where it cost no AUROC. ``max_per_class=None`` restores the paper.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from tripwire.batching import in_batches
from tripwire.data.base import ImageSet
from tripwire.detectors._baselines import LogisticFusion
from tripwire.detectors.base import Detector
from tripwire.detectors.mdl import candidate_layers
from tripwire.detectors.params import OpenFraction, Positive, PositiveInt
from tripwire.detectors.registry import register_detector
from tripwire.detectors.state import learned
from tripwire.errors import InvalidInputError
from tripwire.features import LayerTap, extract_features, model_device

log = logging.getLogger(__name__)

_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_CHANNEL_DROPOUTS = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_MC_CHUNK = 4096  # images per MC forward (passes × batch) of whole passes, bounding memory
_MC_ELEMENTS = 2**24  # elements at the dropout layers per MC forward when the prefix runs once
_KD_ROWS = 2048  # rows per kernel matrix product (≤ 2048 × S float32), bounding memory
_EXP_FLOOR = -80.0  # exp(−80) ≈ 1.8e-35, still a normal float32


@dataclass
class KernelDensity:
    """Gaussian kernel density over one support set, precomputed for fast float32 scoring.

    log KD(z) = logsumexp_i(−‖z − s_i‖² / (2σ²)) − log S − (D/2)·log(2πσ²). With the support
    centred on its mean μ (translation changes no distance, and small norms lose fewer digits),
    −‖z − s_i‖²/(2σ²) = (z−μ)·(s_i−μ)/σ² − ‖s_i−μ‖²/(2σ²) − ‖z−μ‖²/(2σ²): the first two terms
    are one matrix product plus a bias, the last is constant per row and leaves the logsumexp.
    Terms more than 80 below a row's largest are floored there before `exp` (exp(−80) ≈ 1.8e-35
    stays a normal float32; subnormals are ~100× slower on CPUs), which changes the density by
    a relative < S·e⁻⁸⁰.

    Attributes:
        centre: (D,) the support's mean; weight: (D, S) (s_i − μ)ᵀ/σ²; bias: (S,)
        −‖s_i − μ‖²/(2σ²); const: −log S − (D/2)·log(2πσ²); bandwidth: σ. All float32.
    """

    centre: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    const: float
    bandwidth: float

    @classmethod
    def of(cls, support: torch.Tensor, bandwidth: float) -> KernelDensity:
        """Precompute the density of the rows of `support` (S, D), S ≥ 1."""
        s = support.float()
        centre = s.mean(dim=0)
        sc = s - centre
        inv = 1.0 / bandwidth**2
        const = -math.log(len(s)) - 0.5 * s.shape[1] * math.log(2 * math.pi * bandwidth**2)
        weight = (sc * inv).T.contiguous()
        return cls(centre, weight, -0.5 * inv * sc.square().sum(1), const, bandwidth)

    def to(self, device: torch.device) -> KernelDensity:
        """The same density with tensors on `device`."""
        return KernelDensity(
            self.centre.to(device),
            self.weight.to(device),
            self.bias.to(device),
            self.const,
            self.bandwidth,
        )

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """log KD of each row of `z` (N, D), float64 (N,)."""
        out = []
        for zb in z.float().split(_KD_ROWS):
            zc = zb - self.centre
            a = torch.addmm(self.bias, zc, self.weight)  # N×S
            top = a.amax(dim=1, keepdim=True)
            lse = top.squeeze(1) + a.sub_(top).clamp_min_(_EXP_FLOOR).exp_().sum(dim=1).log()
            quad = zc.square().sum(dim=1) / (2 * self.bandwidth**2)
            out.append(lse.double() - quad.double() + self.const)
        return torch.cat(out)


def log_kernel_density(z: torch.Tensor, support: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """log of the Gaussian kernel density of each row of `z` (N, D) over `support` (S, D).

    Equals scikit-learn's ``KernelDensity(bandwidth=σ).score_samples`` to float32 precision.

    Examples:
        >>> s = torch.zeros(1, 2)
        >>> float(log_kernel_density(torch.zeros(1, 2), s, 1.0)[0]) == -math.log(2 * math.pi)
        True
    """
    return KernelDensity.of(support.to(z.device), bandwidth).log_density(z)


def mc_dropout_layers(model: nn.Module) -> list[str]:
    """Names of the model's dropout modules with p > 0."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, _DROPOUTS) and float(getattr(m, "p", 0.0)) > 0
    ]


def _sum_of_variances(probs: torch.Tensor) -> torch.Tensor:
    """BU from the T passes' softmax outputs (T×N×K): Σ_k Var_t p_tk, per input."""
    return probs.var(dim=0, unbiased=False).sum(dim=1)


def _mask_hook(mask: torch.Tensor, n: int):  # type: ignore[no-untyped-def]
    """A forward hook applying t = len(mask) dropout masks to a batch of t·n rows (pass-major);
    given n rows (the first dropout layer when the prefix runs once), it copies them t times."""
    t = len(mask)

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> torch.Tensor:
        if out.shape[0] == n and t > 1:
            out = out.repeat(t, *([1] * (out.dim() - 1)))
        shaped = out.view(t, n, *out.shape[1:]) * mask.to(out.device, out.dtype).unsqueeze(1)
        return shaped.view(out.shape)

    return hook


@register_detector
class KDBUDetector(Detector):
    """Kernel density + MC-dropout uncertainty, fused by logistic regression (Feinman et al.).

    Args:
        bandwidth: σ of the Gaussian kernel (paper: 3.79 for MNIST).
        mc_passes: T, stochastic passes for BU (paper: 50).
        layer: the last hidden layer's module name, or ``"auto"`` (the last layer before the
            logits, e.g. LeNet's ``relu4``).
        max_per_class: at most this many training inputs per class in each KD set (seeded
            subsample; None = all, as the paper). Default 2000: each scored input costs one
            product with its class's set, so the full MNIST sets (≈ 4,900 per class) cost about
            a LeNet forward pass; 2,000 gave the same validation AUROC (FGSM of held-out
            training images: 0.9285 vs 0.9265 with all) at ≈ 0.7× instead of ≈ 0.55× the bare
            forward throughput (`research/notebook.md`).
        holdout_fraction: share of the ID data kept out of the KD sets to fit the regression.
        max_fusion: at most this many ID inputs and anomalies fit the regression.
        seed: seed of the split, subsamples and dropout masks.

    Examples:
        >>> adv = make_anomalies("fgsm", model, x_train, y_train).images  # doctest: +SKIP
        >>> det = KDBUDetector().fit(model, mnist_train, anomalies=adv)   # doctest: +SKIP
    """

    name = "kd_bu"
    export_refusal = "its uncertainty comes from Monte-Carlo dropout passes, random at scoring time"
    needs_anomalies = True

    bandwidth: Positive = 3.79
    mc_passes: Annotated[int, Field(ge=2)] = 50
    layer: str = "auto"
    max_per_class: PositiveInt | None = 2000
    holdout_fraction: OpenFraction = 0.1
    max_fusion: PositiveInt = 5000
    seed: int = 0

    layer_: str = learned()
    mc_layers_: list[str] = learned()
    mc_prefix_once_: bool = learned()
    mc_row_elements_: int = learned()
    support_: torch.Tensor = learned()
    counts_: torch.Tensor = learned()
    fusion_: LogisticFusion = learned()
    masks_: dict[str, torch.Tensor] = learned(stored_as="mask")

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
        self.mc_prefix_once_ = self._prefix_runs_once_correctly(model, data.as_float(slice(0, 2)))
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
        self._density_cache: tuple[torch.device, list[KernelDensity | None]] | None = None
        for c, p in enumerate(per_class):
            self.support_[c, : len(p)] = p

    def _draw_masks(self, model: nn.Module, sample: torch.Tensor) -> None:
        self.mc_layers_ = mc_dropout_layers(model)
        self.masks_: dict[str, torch.Tensor] = {}
        self.mc_row_elements_ = 0  # elements of the widest dropout layer's output, per input
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
        self.mc_row_elements_ = max(math.prod(shapes[n]) for n in self.mc_layers_)
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
        if self.mc_prefix_once_:  # the clean pass rides in the same forward as the T passes
            z, logits, probs = self._passes(model, x, clean=True)
            bu = _sum_of_variances(probs)
        else:
            with torch.no_grad(), LayerTap(model, [self.layer_], "none") as tap:
                logits = model(x)
            z, bu = tap.outputs[self.layer_], self.uncertainty(model, x)
        pred = logits.argmax(dim=1)
        neg_kd = self.neg_log_kd(z, pred)
        neg_kd = torch.nan_to_num(neg_kd, posinf=torch.finfo(torch.float32).max)
        return torch.stack([neg_kd, bu], dim=1), pred

    def neg_log_kd(self, z: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """−log KD of each row of `z` (N, D) under the KD set of its class `pred` (float64).

        Rows are sorted by class so that each class costs one matrix product against its set.
        A class without training inputs gives +inf (the lowest density there is).
        """
        densities = self._densities(z.device)
        order = torch.argsort(pred, stable=True)
        sizes = torch.bincount(pred, minlength=self.num_classes_).tolist()
        parts = []
        for c, zc in enumerate(z[order].split(sizes)):
            if len(zc) == 0:
                continue
            density = densities[c]
            if density is None:
                parts.append(torch.full((len(zc),), float("inf"), dtype=torch.float64))
            else:
                parts.append(-density.log_density(zc))
        out = torch.empty(len(z), dtype=torch.float64, device=z.device)
        out[order] = torch.cat([p.to(z.device) for p in parts])
        return out

    def _densities(self, device: torch.device) -> list[KernelDensity | None]:
        """The per-class densities on `device`, precomputed once from the stored KD sets."""
        cache = getattr(self, "_density_cache", None)
        if cache is None or cache[0] != device:
            dens: list[KernelDensity | None] = []
            for c in range(self.num_classes_):
                n = int(self.counts_[c])
                support = self.support_[c, :n].to(device)
                dens.append(KernelDensity.of(support, self.bandwidth) if n else None)
            cache = (device, dens)
            self._density_cache = cache
        return cache[1]

    def uncertainty(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """BU: Σ_k Var_t softmax(f_t(x))_k over the T fixed dropout masks (0 without dropout)."""
        if not self.mc_layers_:
            return torch.zeros(len(x), dtype=torch.float64, device=x.device)
        return _sum_of_variances(self._passes(model, x)[2])

    def _passes(
        self, model: nn.Module, x: torch.Tensor, clean: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The softmax outputs of the T dropout passes (T×N×K). With `clean`, one more pass
        with every mask 1 runs first, in the same forward; its `layer_` output and logits are
        returned too (else two empty tensors)."""
        n = len(x)
        masks = self.masks_
        if clean:
            masks = {k: torch.cat([torch.ones_like(m[:1]), m]) for k, m in masks.items()}
        total = self.mc_passes + int(clean)
        if self.mc_prefix_once_:  # only the layers from the first dropout on see T·N rows
            per_chunk = max(1, _MC_ELEMENTS // (n * self.mc_row_elements_))
        else:
            per_chunk = max(1, _MC_CHUNK // n)
        modules = dict(model.named_modules())
        z = logits = torch.empty(0)
        probs = []
        for start in range(0, total, per_chunk):
            t = min(per_chunk, total - start)
            handles = [
                modules[name].register_forward_hook(_mask_hook(masks[name][start : start + t], n))
                for name in self.mc_layers_
            ]
            tap_layers = [self.layer_] if clean and start == 0 else []
            try:
                with torch.no_grad(), LayerTap(model, tap_layers, "none") as tap:
                    out = model(x if self.mc_prefix_once_ else x.repeat(t, 1, 1, 1))
            finally:
                for h in handles:
                    h.remove()
            if tap_layers:
                z, logits = tap.outputs[self.layer_][:n], out[:n]
            probs.append(torch.softmax(out.double(), dim=1).view(t, n, -1))
        p = torch.cat(probs)
        return z, logits, p[1:] if clean else p

    def _prefix_runs_once_correctly(self, model: nn.Module, sample: torch.Tensor) -> bool:
        """Whether running the layers before the first dropout layer once gives the features of
        whole passes, on `sample` (see the module docstring)."""
        if not self.mc_layers_:
            return False
        sample = sample.to(model_device(model))
        self.mc_prefix_once_ = False
        whole, whole_pred = self.raw_features(model, sample)
        self.mc_prefix_once_ = True
        try:
            once, once_pred = self.raw_features(model, sample)
        except RuntimeError:
            return False
        return torch.equal(once_pred, whole_pred) and bool(
            torch.allclose(once, whole, rtol=1e-3, atol=1e-6)
        )

    def _score_batch(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, pred = self.raw_features(model, x)
        return self.fusion_.score(feats), pred

    # ------------------------------------------------------------------------------ state
    @property
    def uses_bu_(self) -> bool:
        """Whether Bayesian uncertainty is used (the model had dropout with p > 0)."""
        return bool(self.mc_layers_)
