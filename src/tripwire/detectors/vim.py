"""Virtual-logit matching — Wang, Li, Feng & Zhang, "ViM: Out-Of-Distribution with Virtual-logit
Matching" (CVPR 2022). With penultimate features h, head logits f = W·h + b (`tripwire.head`):

    o      = −W⁺ b                           the origin at which the logits vanish (W⁺: pseudo-
                                             inverse)
    P      = eigenvectors of (1/N) Σ (h − o)(h − o)ᵀ over the ID fit images, beyond the `dim`
             largest eigenvalues (the residual space)
    v(x)   = α · ‖Pᵀ (h(x) − o)‖₂             the virtual logit
    α      = Σ_train max_k f_k / Σ_train ‖Pᵀ (h − o)‖₂
    s(x)   = v(x) − log Σ_k exp f_k(x)       (the paper's −log softmax probability of the
                                             virtual class, up to a monotone map; higher = more
                                             anomalous)

The paper sets the principal dimension by the feature width (e.g. 1000 of 2048); OpenOOD's
CIFAR-10 configuration keeps 256 of ResNet-18's 512 features. The default here is that same half
of the width (``dim=None``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tripwire.data.base import ImageSet
from tripwire.detectors.base import Detector
from tripwire.detectors.fileformat import state_field
from tripwire.detectors.registry import register_detector
from tripwire.errors import InvalidInputError, ModelMismatchError
from tripwire.head import PenultimateTap, classifier_head, penultimate_features


@register_detector
class ViMDetector(Detector):
    """Residual norm of the penultimate features as a virtual logit, against the energy.

    Args:
        dim: the principal dimension D (the residual space is what lies beyond it); None: half
            the feature width.

    Example:
        >>> det = ViMDetector().fit(model, train).calibrate(model, val)   # doctest: +SKIP
        >>> det.score(model, x)                                            # doctest: +SKIP
    """

    name = "vim"

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim

    def _validate_params(self) -> None:
        if self.dim is not None and (not isinstance(self.dim, int) or self.dim < 1):
            raise ValueError(f"dim must be None or a positive integer, got {self.dim!r}")

    def _fit(self, model: nn.Module, data: ImageSet, anomalies: ImageSet | None) -> None:
        h, logits = penultimate_features(model, data.batches(512))
        width = h.shape[1]
        dim = width // 2 if self.dim is None else self.dim
        if not 0 < dim < width:
            raise ValueError(f"dim must lie in [1, {width - 1}] for {width} features, got {dim}")
        head = classifier_head(model)[1]
        w = head.weight.detach().double().cpu()
        b = torch.zeros(len(w), dtype=torch.float64) if head.bias is None else head.bias
        self.origin_ = -(torch.linalg.pinv(w) @ b.detach().double().cpu())
        centred = h.double() - self.origin_
        _, vectors = torch.linalg.eigh(centred.T @ centred / len(centred))  # ascending
        self.residual_ = vectors[:, : width - dim].contiguous()  # beyond the `dim` largest
        self.dim_ = dim
        residual = (centred @ self.residual_).norm(dim=1)
        self.alpha_ = float(logits.double().amax(dim=1).sum() / residual.sum().clamp_min(1e-12))
        if not self.alpha_ > 0:
            raise InvalidInputError(
                "ViM scales its virtual logit by the ID inputs' mean maximum logit, which is not "
                "positive for this model"
            )

    def _score_batch(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with PenultimateTap(model) as tap:
            h, logits = tap.forward(model, x)
        if h.shape[1] != len(self.origin_):
            raise ModelMismatchError(
                f"the model gives {h.shape[1]} penultimate features; the detector was fitted on "
                f"{len(self.origin_)}"
            )
        centred = h.double() - self.origin_.to(h.device)
        virtual = self.alpha_ * (centred @ self.residual_.to(h.device)).norm(dim=1)
        return virtual - torch.logsumexp(logits.double(), dim=1), logits.argmax(dim=1)

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return {"origin": self.origin_, "residual": self.residual_}

    def _state_meta(self) -> dict[str, Any]:
        return {"alpha": self.alpha_, "dim": self.dim_}

    def _set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.origin_, self.residual_ = tensors["origin"], tensors["residual"]
        self.alpha_ = state_field(meta, "alpha", float)
        self.dim_ = state_field(meta, "dim", int)

    def _check_state(self) -> None:
        width = len(self.origin_)
        if self.origin_.ndim != 1 or self.residual_.shape != (width, width - self.dim_):
            raise ValueError(
                f"origin {tuple(self.origin_.shape)} and residual {tuple(self.residual_.shape)} "
                f"do not fit dim = {self.dim_}"
            )
        if not all(bool(torch.isfinite(t).all()) for t in (self.origin_, self.residual_)):
            raise ValueError("non-finite entries in the state")
        if not self.alpha_ > 0:
            raise ValueError(f"alpha must be positive, got {self.alpha_}")
