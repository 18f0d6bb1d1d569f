"""`Guard`: a classifier and a fitted, calibrated detector bound together as one `nn.Module`.

``guard(x)`` runs the model once, with the detector's taps, and returns per input the logits,
the predicted class, the anomaly score and the flag ``score > threshold[predicted class]``.
The thresholds are a buffer of the module, so ``guard.to(device)`` moves them with the model.
Being a module, a guard is also what `tripwire.export` writes as one TorchScript, ``torch.export``
or ONNX file that serving engines run without tripwire.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from tripwire.data.base import check_images
from tripwire.detectors.base import Detector, ScoreInput
from tripwire.errors import NotFittedError
from tripwire.features import eval_mode, model_device, model_dtype
from tripwire.model_output import outputs_of, require_logits
from tripwire.tracing import tracing


class GuardResult(NamedTuple):
    """What the guard says about a batch: the model's logits (N×K) and classes (N,), anomaly
    scores (N, float64; higher = more anomalous) and flags (N,; True = do not trust the
    prediction)."""

    logits: torch.Tensor
    predicted: torch.Tensor
    scores: torch.Tensor
    is_anomaly: torch.Tensor


class Guard(nn.Module):
    """Run a classifier and its anomaly detector in one call.

    The model's weights are checked here and again whenever they change (`ModelMismatchError`
    for other weights than the detector was fitted on, see `Detector.verify_model`); a detector
    without thresholds (`calibrate`) is refused. ``verify_model=False`` skips the check, for a
    model fine-tuned on purpose.

    ``guard(x)`` takes one batch as a tensor (float N×C×H×W in [0, 1], or uint8) and answers on
    the model's device; `check` takes any input a detector scores (numpy arrays, an ImageSet, a
    DataLoader), batch by batch, and answers on the CPU.

    Examples:
        >>> guard = Guard(model, Detector.load("det/"))          # doctest: +SKIP
        >>> result = guard(images)                              # doctest: +SKIP
        >>> result.predicted[~result.is_anomaly]                # doctest: +SKIP
    """

    thresholds: torch.Tensor

    def __init__(self, model: nn.Module, detector: Detector, *, verify_model: bool = True) -> None:
        super().__init__()
        detector.check_fitted()
        if verify_model:
            detector.verify_model(model)
        if detector.thresholds_ is None:
            raise NotFittedError("the detector has no thresholds: call calibrate(model, id_val)")
        self.model = model
        self.detector = detector
        self.verify_model = verify_model
        self.register_buffer("thresholds", detector.thresholds_.detach().clone())

    def forward(self, x: torch.Tensor) -> GuardResult:
        """The guard's answer for one batch of images, on the model's device."""
        if not tracing():  # a traced guard is fed what it was traced with
            self.detector.check_tappable(self.model)
            if self.verify_model:
                self.detector.verify_model(self.model)
            x = check_images(x, self.detector.input_shape_)
            x = x.to(model_device(self.model), model_dtype(self.model))
        grad = torch.enable_grad() if self.detector.needs_gradients else torch.no_grad()
        with eval_mode(self.model), grad, outputs_of(self.model) as outputs:
            scores, predicted = self.detector._score_batch(self.model, x)
        if len(outputs) == 1:
            logits = require_logits(outputs[0])
        else:  # the detector ran the model on other inputs too (perturbed, with dropout)
            with eval_mode(self.model), torch.no_grad():
                logits = require_logits(self.model(x))
        scores = scores.detach().to(torch.float64)
        return GuardResult(logits.detach(), predicted, scores, scores > self.thresholds[predicted])

    def check(self, x: ScoreInput, batch_size: int = 256) -> GuardResult:
        """`forward` over any input `Detector.score_and_predict` takes (tensors or numpy arrays,
        float in [0, 1] or uint8, one image, an ImageSet, a DataLoader), one batch at a time;
        the answers gathered on the CPU."""
        return GuardResult(
            *self.detector._over_batches(self.model, x, batch_size, self.verify_model, self._answer)
        )

    def _answer(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self(x))
