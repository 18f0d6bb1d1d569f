"""Feature-response-map entropy (Amirian et al., "Trace and Detect Adversarial Attacks on CNNs
using Feature Response Maps", ANNPR 2018 / Deep Learning Day 2018).

The feature-response map R of an input is the guided back-propagation (Springenberg et al. 2015)
of the predicted class's logit to the input (`tripwire.guided_backprop`). Adversarial
perturbations scatter the response over many pixels, so its *local spatial entropy* rises.
For every w×w window k (sliding with stride 1) of every channel, |R| is normalised to a
distribution h_k and

    S_k = −Σ_i Σ_j h_k(i, j) · log2 h_k(i, j)          (0 · log 0 = 0; an all-zero window has S = 0)

so S_k = 0 when all of a window's mass sits on one pixel and S_k = log2(w²) when it is spread
evenly. The detector's statistic is S̄, the mean of S_k over windows and channels. Fitting
stores, per predicted class, the mean and standard deviation of S̄ on ID data; the score is the
class-standardised z = (S̄ − μ_c) / σ_c (``direction="higher"``, the slides' rule: higher entropy
= more anomalous) or |z| (``direction="two-sided"``, for shifts that make maps *more* peaked).

With ``fuse_with="uniform"`` a `UniformDetector` is fitted as well and the score is the mean of
the two class-standardised scores, z_FRM and z_uniform, both standardised on a held-out share of
the ID data.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from tripwire.data.base import ImageSet
from tripwire.detectors.base import Detector
from tripwire.detectors.fileformat import state_field
from tripwire.detectors.params import OpenFraction, PositiveInt
from tripwire.detectors.registry import register_detector
from tripwire.detectors.uniform import UniformDetector
from tripwire.guided_backprop import check_guided_model, guided_backprop_and_logits
from tripwire.progress import track

Direction = Literal["higher", "two-sided"]


def local_entropy(response: torch.Tensor, window: int = 5) -> torch.Tensor:
    """Mean local spatial entropy (bits) of response maps N×C×H×W, one value per map, (N,).

    Within every w×w window (stride 1) of every channel, h = |R| / Σ_window |R| and
    S = −Σ h log2 h; the result averages S over windows and channels. Ranges from 0 (each
    window's mass on one pixel, or no mass) to log2(w²) (mass spread evenly).

    Examples:
        >>> local_entropy(torch.ones(1, 1, 5, 5), window=5)  # uniform → log2(25)
        tensor([4.6439])
    """
    if response.ndim != 4:
        raise ValueError(f"expected maps N×C×H×W, got shape {tuple(response.shape)}")
    n, c, h, w = response.shape
    if window > min(h, w):
        raise ValueError(f"window {window} is larger than the maps ({h}×{w})")
    a = response.abs().reshape(n * c, 1, h, w).double()
    patches = F.unfold(a, window)  # (N·C) × w² × L
    mass = patches.sum(dim=1, keepdim=True)
    p = patches / mass.clamp_min(torch.finfo(a.dtype).tiny)
    ent = -torch.special.xlogy(p, p).sum(dim=1) / math.log(2.0)
    return ent.reshape(n, -1).mean(dim=1)


@register_detector
class FeatureResponseDetector(Detector):
    """Local spatial entropy of guided-backprop response maps (Amirian et al. 2018).

    Args:
        window: side w of the sliding windows (the entropy of one window is at most log2 w²).
        direction: ``"higher"`` (score z: higher entropy = anomalous) or ``"two-sided"`` (|z|).
        fuse_with: None, or ``"uniform"`` to average with the uniform detector's standardised
            score.
        holdout_fraction: share of the ID data used for the standardising statistics when fused
            (the uniform detector is fitted on the rest).
        max_fit: at most this many ID images are used for the per-class statistics.
        seed: seed of the subsample and split.

    Examples:
        >>> det = FeatureResponseDetector(window=5).fit(model, mnist_train)  # doctest: +SKIP
        >>> det.score(model, x_adv)                                         # doctest: +SKIP
    """

    name = "feature-response"
    needs_gradients = True
    export_refusal = "its response maps are input gradients (guided backpropagation)"

    window: Annotated[int, Field(ge=2)] = 5
    direction: Direction = "higher"
    fuse_with: Literal["uniform"] | None = None
    holdout_fraction: OpenFraction = 0.2
    max_fit: PositiveInt = 5000
    seed: int = 0

    # ------------------------------------------------------------------------------ fitting
    def _fit(self, model: nn.Module, data: ImageSet, anomalies: ImageSet | None) -> None:
        check_guided_model(model)
        self.uniform_: UniformDetector | None = None
        stats_set = data
        if self.fuse_with == "uniform":
            fit_set, stats_set = data.split(self.holdout_fraction, seed=self.seed)
            self.uniform_ = UniformDetector(seed=self.seed).fit(model, fit_set)
        stats_set = stats_set.take(min(self.max_fit, len(stats_set)), seed=self.seed)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        ents, unis, preds = [], [], []
        for xb in track(stats_set.batches(256), "feature-response: ID statistics"):
            xb = xb.to(device)
            ent, pred = self._entropy(model, xb)
            ents.append(ent.cpu())
            preds.append(pred.cpu())
            if self.uniform_ is not None:
                with torch.no_grad():
                    unis.append(self.uniform_._score_batch(model, xb)[0].cpu().double())
        pred = torch.cat(preds)
        raw = torch.cat(ents).double().unsqueeze(1)
        if self.uniform_ is not None:
            raw = torch.cat([raw, torch.cat(unis).unsqueeze(1)], dim=1)
        self.mean_, self.std_ = _per_class_mean_std(raw, pred, self.num_classes_)

    def _entropy(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        response, logits = guided_backprop_and_logits(model, x)
        return local_entropy(response, self.window), logits.argmax(dim=1)

    # ------------------------------------------------------------------------------ scoring
    def entropy(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean local spatial entropy S̄ (N,) of each input's response map, and predictions."""
        return self._entropy(model, x)

    def _score_batch(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ent, pred = self._entropy(model, x)
        raw = ent.double().unsqueeze(1)
        if self.uniform_ is not None:
            with torch.no_grad():
                uni = self.uniform_._score_batch(model, x)[0].double()
            raw = torch.cat([raw, uni.unsqueeze(1)], dim=1)
        mean, std = self.mean_.to(x.device)[pred], self.std_.to(x.device)[pred]
        z = (raw - mean) / std
        if self.direction == "two-sided":
            z[:, 0] = z[:, 0].abs()
        return z.mean(dim=1), pred

    # ------------------------------------------------------------------------------ state
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        out = {"mean": self.mean_, "std": self.std_}
        if self.uniform_ is not None:
            out.update({f"uniform.{k}": v for k, v in self.uniform_._state_tensors().items()})
        return out

    def _state_meta(self) -> dict[str, Any]:
        if self.uniform_ is None:
            return {"uniform": None}
        return {"uniform": self.uniform_._state_meta()}

    def _set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.mean_, self.std_ = tensors["mean"], tensors["std"]
        self.uniform_ = None
        if state_field(meta, "uniform", dict[str, Any] | None, None) is not None:
            uni = UniformDetector(seed=self.seed)
            sub = {k[len("uniform.") :]: v for k, v in tensors.items() if k.startswith("uniform.")}
            uni._set_state(sub, meta["uniform"])
            uni.input_shape_ = self.input_shape_
            uni.num_classes_ = self.num_classes_
            uni.model_digest_ = self.model_digest_
            uni.model_ref_ = dict(self.model_ref_)
            uni.thresholds_ = None
            uni.calibration_tpr_ = None
            uni.fitted_ = True
            self.uniform_ = uni


def _per_class_mean_std(
    raw: torch.Tensor, pred: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class and column, mean and standard deviation (global ones for rare classes)."""
    mean = raw.mean(dim=0).repeat(k, 1)
    std = raw.std(dim=0).nan_to_num(1.0).repeat(k, 1)
    for c in range(k):
        rc = raw[pred == c]
        if len(rc) >= 5:
            mean[c], std[c] = rc.mean(dim=0), rc.std(dim=0)
    return mean, std.clamp_min(1e-9)
