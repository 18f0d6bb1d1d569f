"""ELO — Abdelzad, Czarnecki, Salay, Denounden, Vernekar & Phan, "Detecting Out-of-Distribution
Inputs in Deep Neural Networks Using an Early-Layer Output" (2019): ONE global one-class SVM
(RBF, ν = 0.001, γ = "scale", after a StandardScaler) on the channel means z(x) of an early layer,
with no per-class split (the difference from Zhao et al.'s uniform detector):

    s(x) = −Σ_j α_j · exp(−γ ‖z(x) − sv_j‖²)        (= −sklearn ``score_samples``; higher = more
                                                        anomalous)

Fitted with scikit-learn, scored in torch — `tripwire.detectors.ocsvm.ClassConditionalOCSVM`
with a single class. The layer is a parameter; ``"auto"`` picks it exactly as the uniform detector
picks its most discriminative layer (`tripwire.detectors.mdl`: held-out ID images vs the
``anomalies`` given to `fit`, else synthetic proxies; never test sets). For LeNet that is an early
conv block.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from tripwire.data.base import ImageSet
from tripwire.detectors.base import Detector
from tripwire.detectors.mdl import choose_layer_from_sets
from tripwire.detectors.ocsvm import ClassConditionalOCSVM
from tripwire.detectors.params import Fraction, Positive
from tripwire.detectors.registry import register_detector
from tripwire.detectors.state import learned
from tripwire.features import LayerTap, Pooling, extract_features


@register_detector
class ELODetector(Detector):
    """One global RBF one-class SVM on an early layer's channel means (Abdelzad et al. 2019).

    Args:
        layer: module name, or ``"auto"`` (chosen as the uniform detector chooses its MDL).
        nu: ν of the SVM (ELO's paper: 0.001).
        gamma: RBF width, a float or ``"scale"``.
        pooling: reduction of the conv map (``"mean"`` = channel means).
        max_samples: at most this many ID inputs fit the SVM (seeded subsample; libsvm's cost
            grows about quadratically).
        seed: seed of the subsample, the layer choice and proxies.

    Examples:
        >>> det = ELODetector(layer="relu1").fit(model, mnist_train)   # doctest: +SKIP
        >>> det.score(model, x)                                        # doctest: +SKIP
    """

    name = "elo"

    layer: str = "auto"
    nu: Fraction = 0.001
    gamma: Positive | Literal["scale"] = "scale"
    pooling: Pooling = "mean"
    max_samples: Annotated[int, Field(ge=10)] = 20_000
    seed: int = 0

    layer_: str = learned()
    svm_: ClassConditionalOCSVM = learned()

    def _fit(self, model: nn.Module, data: ImageSet, anomalies: ImageSet | None) -> None:
        self.layer_ = self._choose(model, data, anomalies) if self.layer == "auto" else self.layer
        sample = data if len(data) <= self.max_samples else data.take(self.max_samples, self.seed)
        feats = extract_features(model, sample.batches(512), [self.layer_], self.pooling)
        z = feats.layers[self.layer_]
        self.svm_ = ClassConditionalOCSVM.fit(
            z, torch.zeros(len(z), dtype=torch.long), 1, nu=self.nu, gamma=self.gamma
        )

    def _choose(self, model: nn.Module, data: ImageSet, anomalies: ImageSet | None) -> str:
        fit_set, held_set = data.split(0.1, seed=self.seed)
        choice = choose_layer_from_sets(
            model,
            fit_set,
            held_set,
            anomalies,
            seed=self.seed,
            num_classes=self.num_classes_,
            nu=0.1,
            gamma=self.gamma,
            pooling=self.pooling,
        )
        return choice.layer

    def fit_summary(self) -> dict[str, str]:
        """The early layer that `fit` chose (``layer="auto"``); {} when the layer was given."""
        return {"layer": self.layer_} if self.layer == "auto" else {}

    def _score_batch(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with LayerTap(model, [self.layer_], self.pooling) as tap:
            logits = model(x)
        z = tap.outputs[self.layer_]
        zeros = torch.zeros_like(z[:, 0], dtype=torch.long)  # one class; no fixed batch size
        return self.svm_.to(z.device).score(z, zeros), logits.argmax(dim=1)
