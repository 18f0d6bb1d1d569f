"""LID — Ma, Li, Wang, Erfani, Wijewickrema, Schoenebeck, Song, Houle & Bailey, "Characterizing
Adversarial Subspaces Using Local Intrinsic Dimensionality" (ICLR 2018).

For each of several layers ℓ, the maximum-likelihood estimate of the local intrinsic
dimensionality of the (flattened) activation a_ℓ(x), from its distances r_1 ≤ … ≤ r_k to the k
nearest of a reference minibatch of clean activations:

    LID_ℓ(x) = −( 1/k · Σ_{i=1..k} log(r_i / r_k) )⁻¹

k = 20 and minibatch 100 (the paper's settings). The paper drew a fresh random minibatch for every
batch being scored; here the reference is **one fixed random minibatch of 100 clean training
inputs** drawn at `fit` (seeded), so an input's score does not depend on the other inputs of its
batch. The per-layer estimates (default: the output of every activation module, plus the logits)
are z-scored with ID statistics and fused by a logistic regression trained on clean vs anomalous
inputs (``needs_anomalies``; the paper: FGSM of training images); the score is its log-odds
(higher = more anomalous). The clean rows of the regression are training inputs outside the
reference minibatch.

An activation module used more than once in a forward pass (e.g. one shared ``nn.ReLU``) is seen
at its last call only; name the layers explicitly for such models.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from tripwire.batching import in_batches
from tripwire.data.base import ImageSet
from tripwire.detectors._baselines import LogisticFusion
from tripwire.detectors.base import Detector
from tripwire.detectors.params import Names, PositiveInt
from tripwire.detectors.registry import register_detector
from tripwire.detectors.state import learned
from tripwire.features import LayerTap, extract_features, is_activation, list_layers, model_device

LOGITS = "logits"


def lid_mle(x: torch.Tensor, reference: torch.Tensor, k: int = 20) -> torch.Tensor:
    """MLE of the local intrinsic dimensionality of each row of `x` (N, D) w.r.t. `reference`
    (M, D), from the k nearest reference rows (Ma et al. 2018, eq. 3; Amsaleg et al. 2015).

    Zero distances (an exact copy of x in the reference) are skipped. Returns float64 (N,).

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> plane = torch.rand(2000, 2, generator=g) @ torch.randn(2, 10, generator=g)
        >>> round(float(lid_mle(plane[:200], plane[200:], k=20).mean()))
        2
    """
    xf, ref = x.float(), reference.to(x.device).float()
    # Squared distances ‖x‖² + ‖r‖² − 2x·r in one product (what torch.cdist does for more than 25
    # rows, without its copies); the k smallest are found on squares, roots taken of k only.
    sq = torch.addmm(ref.square().sum(dim=1), xf, ref.T, alpha=-2.0)
    sq = sq.add_(xf.square().sum(dim=1, keepdim=True)).clamp_min_(0.0)  # N×M
    sq = sq.masked_fill_(sq <= 1e-12 * sq.amax(dim=1, keepdim=True), float("inf"))
    r2 = torch.topk(sq, k, dim=1, largest=False).values.double()
    ratio = 0.5 * torch.log(r2 / r2[:, -1:])  # log(r_i / r_k)
    return -1.0 / ratio.mean(dim=1).clamp_max(-1e-12)


def default_layers(model: nn.Module) -> list[str]:
    """The model's activation modules (ReLU, GELU, …) in order, plus ``"logits"``."""
    modules = dict(model.named_modules())
    acts = [n for n in list_layers(model) if is_activation(modules[n])]
    return [*acts, LOGITS]


@register_detector
class LIDDetector(Detector):
    """Local intrinsic dimensionality of several layers, fused by logistic regression (Ma et al.).

    Args:
        k: neighbours of the MLE (paper: 20; 10…90 explored).
        reference_size: size of the fixed clean reference minibatch (paper: 100).
        layers: module names and/or ``"logits"``, or ``"auto"`` (every activation + logits).
        max_fusion: at most this many ID inputs and anomalies fit the regression.
        seed: seed of the reference draw and subsamples.

    Examples:
        >>> adv = make_anomalies("fgsm", model, x_train, y_train).images  # doctest: +SKIP
        >>> det = LIDDetector().fit(model, mnist_train, anomalies=adv)    # doctest: +SKIP
    """

    name = "lid"
    needs_anomalies = True

    k: Annotated[int, Field(ge=2)] = 20
    reference_size: PositiveInt = 100
    layers: Names | Literal["auto"] = "auto"
    max_fusion: PositiveInt = 5000
    seed: int = 0

    layers_: list[str] = learned()
    reference_: list[torch.Tensor] = learned()
    fusion_: LogisticFusion = learned()

    def _check_params(self) -> None:
        if self.reference_size <= self.k:
            raise ValueError(f"reference_size ({self.reference_size}) must exceed k ({self.k})")

    def _fit(self, model: nn.Module, data: ImageSet, anomalies: ImageSet | None) -> None:
        assert anomalies is not None
        if len(data) <= self.reference_size:
            raise ValueError(
                f"lid needs more than reference_size={self.reference_size} ID inputs, "
                f"got {len(data)}"
            )
        self.layers_ = default_layers(model) if self.layers == "auto" else list(self.layers)
        g = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(len(data), generator=g)
        ref_set = data.subset(perm[: self.reference_size])
        rest = data.subset(perm[self.reference_size :])
        hooked = [n for n in self.layers_ if n != LOGITS]
        feats = extract_features(model, ref_set.batches(512), hooked, "none")
        self.reference_ = [
            (feats.logits if n == LOGITS else feats.layers[n]).float() for n in self.layers_
        ]
        device = model_device(model)
        id_x = rest.take(self.max_fusion, seed=self.seed + 1).as_float()
        anom_x = anomalies.take(self.max_fusion, seed=self.seed + 2).as_float()

        def lids(x: torch.Tensor) -> torch.Tensor:
            return in_batches(lambda b: self.layer_lids(model, b.to(device))[0], x, 256)

        self.fusion_ = LogisticFusion.fit(lids(id_x), lids(anom_x))

    def layer_lids(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, L) LID estimates per layer against the reference, and the predicted classes."""
        hooked = [n for n in self.layers_ if n != LOGITS]
        with torch.no_grad(), LayerTap(model, hooked, "none") as tap:
            logits = model(x)
        outs = {**tap.outputs, LOGITS: logits}
        cols = [
            lid_mle(outs[n].float(), ref, self.k)
            for n, ref in zip(self.layers_, self.reference_, strict=True)
        ]
        return torch.stack(cols, dim=1), logits.argmax(dim=1)

    def _score_batch(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lids, pred = self.layer_lids(model, x)
        return self.fusion_.score(lids), pred
