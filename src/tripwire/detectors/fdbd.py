"""Fast decision-boundary distance — Liu & Qin, "Fast Decision Boundary based Out-of-Distribution
Detector" (ICML 2024). With penultimate features h, head f = W·h + b and the predicted class
ŷ = argmax_k f_k:

    d_j(x) = |f_ŷ(x) − f_j(x)| / ‖w_ŷ − w_j‖₂     the feature-space distance from h to the
                                                   boundary between ŷ and j
    s(x)   = − (1 / (K − 1)) Σ_{j ≠ ŷ} d_j(x) / ‖h(x) − μ‖₂

μ: the mean penultimate feature of the ID fit images. ID inputs lie far from the boundaries
relative to their distance from the mean, so the paper's score is negated here (higher = more
anomalous). No setting to choose.
"""

from __future__ import annotations

import torch
from torch import nn

from tripwire.detectors.feature_detector import FeatureDetector
from tripwire.detectors.registry import register_detector
from tripwire.detectors.state import learned
from tripwire.errors import InvalidInputError
from tripwire.features import Features
from tripwire.head import check_head_state, head_weights


def boundary_distances(logits: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
    """Mean over j ≠ ŷ of |f_ŷ − f_j| / ‖w_ŷ − w_j‖ per row of `logits` (N×K), float64, given
    the K×K distances ``gaps`` = ‖w_i − w_j‖ between the head's weight rows."""
    logits = logits.double()
    top, predicted = logits.max(dim=1, keepdim=True)
    gaps = gaps[predicted.squeeze(1)]  # N×K, ‖w_ŷ − w_j‖
    ratio = (top - logits) / gaps.masked_fill(gaps == 0, 1.0)
    return ratio.sum(dim=1) / (logits.shape[1] - 1)


@register_detector
class FDBDDetector(FeatureDetector):
    """Mean distance to the decision boundaries, over the distance to the ID feature mean
    (Liu & Qin 2024), negated. The head's W is kept in the state.

    Examples:
        >>> det = FDBDDetector().fit(model, train).calibrate(model, val)   # doctest: +SKIP
    """

    name = "fdbd"

    head_weight_: torch.Tensor = learned()
    mean_: torch.Tensor = learned()
    uses_penultimate = True

    def _fit_features(self, model: nn.Module, features: Features) -> None:
        assert features.penultimate is not None
        self.head_weight_ = head_weights(model)[0]
        if len(self.head_weight_) < 2:
            raise InvalidInputError("fDBD needs a classifier with at least two classes")
        self.mean_ = features.penultimate.double().mean(dim=0)

    def _score_features(self, features: Features) -> torch.Tensor:
        h = self._penultimate(features, len(self.mean_))
        distance = boundary_distances(features.logits, self._gaps(h.device))
        return -distance / (h.double() - self.mean_.to(h.device)).norm(dim=1).clamp_min(1e-12)

    def _gaps(self, device: torch.device) -> torch.Tensor:
        """‖w_i − w_j‖ for every pair of classes, computed once per device and weight."""
        cached = getattr(self, "_gap_cache", None)
        if cached is None or cached[0] is not self.head_weight_ or cached[1].device != device:
            weight = self.head_weight_.to(device)
            cached = self._gap_cache = (self.head_weight_, torch.cdist(weight, weight))
        return cached[1]

    def _check_state(self) -> None:
        check_head_state(self.head_weight_, None, self.num_classes_)
        if self.mean_.shape != (self.head_weight_.shape[1],) or self.mean_.dtype != torch.float64:
            raise ValueError(f"mean must be float64 of shape ({self.head_weight_.shape[1]},)")
        if not bool(torch.isfinite(self.mean_).all()):
            raise ValueError("mean has non-finite entries")
