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

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tripwire.detectors.feature_detector import FeatureDetector
from tripwire.detectors.fileformat import state_field
from tripwire.detectors.params import PositiveInt
from tripwire.detectors.registry import register_detector
from tripwire.detectors.state import learned
from tripwire.errors import InvalidInputError, ModelMismatchError
from tripwire.features import Features
from tripwire.head import head_weights


@dataclass(frozen=True)
class ViMState:
    """What ViM learns: the origin o, the residual basis P (D × (D − dim)) and the scale α."""

    origin: torch.Tensor
    residual: torch.Tensor
    alpha: float

    @classmethod
    def fit(
        cls,
        h: torch.Tensor,
        logits: torch.Tensor,
        head: tuple[torch.Tensor, torch.Tensor],
        dim: int | None,
    ) -> ViMState:
        """From the penultimate features `h` and `logits` of the ID fit images and the head's
        (W, b) (`tripwire.head.head_weights`)."""
        width = h.shape[1]
        dim = width // 2 if dim is None else dim
        if not 0 < dim < width:
            raise ValueError(f"dim must lie in [1, {width - 1}] for {width} features, got {dim}")
        w, b = head
        origin = -(torch.linalg.pinv(w) @ b)
        centred = h.double() - origin
        _, vectors = torch.linalg.eigh(centred.T @ centred / len(centred))  # ascending
        residual = vectors[:, : width - dim].contiguous()  # beyond the `dim` largest
        norms = (centred @ residual).norm(dim=1)
        alpha = float(logits.double().amax(dim=1).sum() / norms.sum().clamp_min(1e-12))
        if not alpha > 0:
            raise InvalidInputError(
                "ViM scales its virtual logit by the ID inputs' mean maximum logit, which is not "
                "positive for this model"
            )
        return cls(origin, residual, alpha)

    @property
    def dim(self) -> int:
        """The principal dimension."""
        return self.residual.shape[0] - self.residual.shape[1]

    def score(self, h: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """s = α ‖Pᵀ (h − o)‖ − logsumexp(logits), in float64, on `h`'s device."""
        if h.shape[1] != len(self.origin):
            raise ModelMismatchError(
                f"the model gives {h.shape[1]} penultimate features; ViM was fitted on "
                f"{len(self.origin)}"
            )
        centred = h.double() - self.origin.to(h.device)
        virtual = self.alpha * (centred @ self.residual.to(h.device)).norm(dim=1)
        return virtual - torch.logsumexp(logits.double(), dim=1)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The state to store (`tripwire.detectors.state`): o and P, and α."""
        return {"origin": self.origin, "residual": self.residual}, {"alpha": self.alpha}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> ViMState:
        """Inverse of `state`; ValueError where the parts do not fit."""
        origin, residual = tensors["origin"], tensors["residual"]
        alpha = state_field(values, "alpha", float)
        width = len(origin)
        if origin.ndim != 1 or residual.ndim != 2 or residual.shape[0] != width:
            raise ValueError(
                f"ViM origin {tuple(origin.shape)} and residual {tuple(residual.shape)} do not fit"
            )
        if not 0 < residual.shape[1] < width:
            raise ValueError(f"ViM residual width {residual.shape[1]} not in [1, {width - 1}]")
        if not all(bool(torch.isfinite(t).all()) for t in (origin, residual)) or not alpha > 0:
            raise ValueError("ViM state has non-finite entries or α ≤ 0")
        return cls(origin, residual, alpha)


@register_detector
class ViMDetector(FeatureDetector):
    """Residual norm of the penultimate features as a virtual logit, against the energy.

    Args:
        dim: the principal dimension D (the residual space is what lies beyond it); None: half
            the feature width.

    Examples:
        >>> det = ViMDetector().fit(model, train).calibrate(model, val)   # doctest: +SKIP
        >>> det.score(model, x)                                            # doctest: +SKIP
    """

    name = "vim"
    uses_penultimate = True

    dim: PositiveInt | None = None

    vim_: ViMState = learned(stored_as="")

    def _fit_features(self, model: nn.Module, features: Features) -> None:
        assert features.penultimate is not None
        head = head_weights(model)
        self.vim_ = ViMState.fit(features.penultimate, features.logits, head, self.dim)

    def _score_features(self, features: Features) -> torch.Tensor:
        assert features.penultimate is not None
        return self.vim_.score(features.penultimate, features.logits)
