"""`FeatureDetector`: the base of detectors that read only what one forward pass gives — the
logits and, where declared, the penultimate features (`tripwire.features.Features`).

Such a detector can be fitted and scored on features extracted once and shared with other
detectors (pytorch-ood's ``fit_features`` / ``score_features``); the benchmark does so, one
extraction per (model, image set) for all of them. ``fit`` / ``score`` work as for every detector
and extract the features themselves.

Examples:
    >>> feats = extract_features(model, train.batches(512), penultimate=True)   # doctest: +SKIP
    >>> det = create_detector("knn").fit_features(model, feats)                 # doctest: +SKIP
    >>> det.calibrate_features(extract_features(model, val.batches(512), penultimate=True))
    ...                                                                         # doctest: +SKIP
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import replace
from typing import ClassVar, Self

import torch
from torch import nn

from tripwire.data.base import ImageSet
from tripwire.detectors.base import Detector
from tripwire.errors import InvalidInputError, ModelMismatchError
from tripwire.features import Features, extract_features
from tripwire.head import PenultimateTap


class FeatureDetector(Detector):
    """A detector whose state and scores are functions of `Features` alone.

    Subclasses set ``uses_penultimate`` when they read the penultimate features and implement
    `_fit_features` (the model is given for its head's weights) and `_score_features`.
    """

    uses_penultimate: ClassVar[bool] = False

    # ----------------------------------------------------------------------------- on features
    def fit_features(self, model: nn.Module, features: Features) -> Self:
        """Fit on features of ID images extracted from `model` (`extract_features`, with
        ``penultimate=True`` where ``uses_penultimate``). Returns self.

        `model` gives the weights digest the detector is bound to and, for detectors that need
        it, the classifier head's weights; it is not run.
        """
        self._check_features(features)
        if features.input_shape is None:
            raise InvalidInputError("the features do not record the inputs' shape")
        self._validate_params()
        self._begin_fit(model, features.input_shape, int(features.logits.shape[1]))
        self._fit_features(model, features)
        self.fitted_ = True
        return self

    def score_features(self, features: Features) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores (N,) float64, higher = more anomalous, and predicted classes (N,) of inputs
        whose features were extracted from the model the detector was fitted on (that is not
        checked here: no model is given)."""
        self.check_fitted()
        self._check_features(features)
        if features.logits.shape[1] != self.num_classes_:
            raise InvalidInputError(
                f"the features have {features.logits.shape[1]} logits; the detector was fitted "
                f"on {self.num_classes_} classes"
            )
        return self._score_features(features).double(), features.predicted

    def calibrate_features(self, features: Features, tpr: float = 0.95) -> Self:
        """`calibrate` on features of held-out ID images the model did not train on."""
        self._set_thresholds(*self.score_features(features), tpr)
        return self

    def _penultimate(self, features: Features, width: int) -> torch.Tensor:
        """The penultimate features of `features`, which must be `width` wide (the fitted
        model's); `ModelMismatchError` otherwise."""
        h = features.penultimate
        assert h is not None
        if h.shape[1] != width:
            raise ModelMismatchError(
                f"the model gives {h.shape[1]} penultimate features; the detector was fitted on "
                f"{width}"
            )
        return h

    def _check_features(self, features: Features) -> None:
        if self.uses_penultimate and features.penultimate is None:
            raise InvalidInputError(
                f"{self.name} reads the penultimate features: extract them with "
                "extract_features(..., penultimate=True)"
            )

    # ------------------------------------------------------------------------------ subclasses
    @abstractmethod
    def _fit_features(self, model: nn.Module, features: Features) -> None:
        """Learn state from the features of the ID fit images."""

    @abstractmethod
    def _score_features(self, features: Features) -> torch.Tensor:
        """Scores (N,) of the inputs whose features are given, on the features' device."""

    # ------------------------------------------------------------------ the Detector protocol
    def _fit(self, model: nn.Module, data: ImageSet, anomalies: ImageSet | None) -> None:
        features = extract_features(model, data.batches(512), penultimate=self.uses_penultimate)
        self._fit_features(model, replace(features, labels=data.labels))

    def _score_batch(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        penultimate = None
        if self.uses_penultimate:
            with PenultimateTap(model) as tap:
                penultimate, logits = tap.forward(model, x)
        else:
            logits = model(x)
        c, h, w = x.shape[1:]
        features = Features(logits, {}, penultimate, (int(c), int(h), int(w)))
        return self._score_features(features), logits.argmax(dim=1)
