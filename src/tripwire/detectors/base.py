"""The detector protocol every tripwire detector follows.

* ``fit(model, id_data)`` learns from in-distribution data only (detectors that need anomalies to
  fit say so with ``needs_anomalies = True`` and take them as the explicit ``anomalies`` argument);
  returns ``self``.
* ``score(model, x)`` → one float per input, shape ``(N,)``; **higher = more anomalous**.
* ``calibrate(model, id_val, tpr=0.95)`` stores one threshold per predicted class such that
  ``tpr`` of the held-out ID inputs predicted as that class are accepted (Zhao et al. §4, eq. 4).
* ``predict(model, x)`` → booleans, True = anomaly (score above the threshold of its class).
* ``save(path)`` / ``Detector.load(path)``: a folder with ``detector.json`` (hyper-parameters,
  small state, the model's weights digest and a SHA-256 of the tensors) and
  ``state.safetensors``. Nothing is ever unpickled; a tampered or foreign file raises
  `FormatError`.

The model is passed at every call, never stored: a saved detector is data only.
Hyper-parameters live in ``__init__`` (stored verbatim, validated in ``fit``); learned state ends
in ``_``.
"""

from __future__ import annotations

import inspect
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tripwire.data.base import ImageSet
from tripwire.errors import FormatError, InvalidInputError, ModelMismatchError, NotFittedError
from tripwire.features import eval_mode, model_device
from tripwire.models.digest import weights_digest
from tripwire.paths import file_digest

FORMAT = "tripwire-detector"
FORMAT_VERSION = 1
JSON_NAME = "detector.json"
TENSORS_NAME = "state.safetensors"

DataLike = ImageSet | torch.Tensor


def as_image_set(data: DataLike, name: str = "input") -> ImageSet:
    """Wrap a float N×C×H×W tensor in [0, 1] as an ImageSet (ImageSets pass through)."""
    if isinstance(data, ImageSet):
        return data
    check_images(data)
    return ImageSet(name, data.detach().to("cpu", torch.float32))


def check_images(x: object, image_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Validate a batch for scoring: a finite float tensor N×C×H×W in [0, 1], N ≥ 1.

    Raises:
        InvalidInputError: saying what is wrong (type, shape, channels, size, NaN/inf, range).
    """
    if not isinstance(x, torch.Tensor):
        raise InvalidInputError(f"expected a torch.Tensor of images, got {type(x).__name__}")
    if x.ndim != 4:
        raise InvalidInputError(f"expected images N×C×H×W, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise InvalidInputError("empty batch: no images to score")
    if not x.is_floating_point():
        raise InvalidInputError(
            f"expected float images in [0, 1], got dtype {x.dtype} (divide uint8 images by 255)"
        )
    if image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape):
        c, h, w = image_shape
        raise InvalidInputError(
            f"expected images of {c} channel(s) and size {h}×{w} (N×{c}×{h}×{w}), "
            f"got N×{'×'.join(str(s) for s in x.shape[1:])}"
        )
    lo_t, hi_t = torch.aminmax(x)  # one pass; NaN propagates into both
    lo, hi = float(lo_t), float(hi_t)
    if not (lo >= -1e-6 and hi <= 1 + 1e-6):
        if not bool(torch.isfinite(x).all()):
            raise InvalidInputError("images contain NaN or infinite values")
        raise InvalidInputError(f"images must lie in [0, 1], found values in [{lo:.4g}, {hi:.4g}]")
    return x


def class_thresholds(
    scores: torch.Tensor,
    predicted: torch.Tensor,
    num_classes: int,
    tpr: float,
    min_count: int = 20,
    unmodelled: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-class thresholds τ_c accepting a fraction `tpr` of the ID inputs predicted as c.

    τ_c is the ⌈(n + 1)·tpr⌉-th smallest of the n calibration scores predicted as c (the
    split-conformal rule, Vovk et al. 2005; Angelopoulos & Bates 2021): a new ID input
    exchangeable with them scores ≤ τ_c with probability ≥ `tpr`. (The plain empirical quantile
    accepts only about n·tpr / (n + 1) of new inputs — 7 % flagged instead of 5 % with 27
    calibration images.) Where ⌈(n + 1)·tpr⌉ > n the largest score is used. Classes with fewer
    than `min_count` ID inputs use the rule over all scores; classes marked `unmodelled` (K,
    bool: the detector learned nothing of them, so their inputs all share one score) use it over
    the scores of the other classes.
    """
    s = scores.double().numpy()
    p = predicted.numpy()
    skip = np.zeros(num_classes, dtype=bool) if unmodelled is None else unmodelled.cpu().numpy()
    modelled = ~skip[p]
    overall = _conformal_quantile(s[modelled] if modelled.any() else s, tpr)
    taus = np.full(num_classes, overall)
    for c in range(num_classes):
        sc = s[p == c]
        if len(sc) >= min_count and not skip[c]:
            taus[c] = _conformal_quantile(sc, tpr)
    return torch.from_numpy(taus)


def _conformal_quantile(scores: np.ndarray, tpr: float) -> float:
    """The ⌈(n + 1)·tpr⌉-th smallest score (the largest if that rank exceeds n)."""
    rank = min(math.ceil((len(scores) + 1) * tpr - 1e-9), len(scores))
    return float(np.partition(scores, rank - 1)[rank - 1])


class Detector(ABC):
    """Base class of all detectors. Subclasses implement `_fit`, `_score_batch` and state I/O."""

    name: ClassVar[str]
    needs_anomalies: ClassVar[bool] = False
    needs_gradients: ClassVar[bool] = False

    # ----------------------------------------------------------------------------------- params
    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters given to ``__init__``, as stored."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self"}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # ----------------------------------------------------------------------------------- fitting
    def fit(
        self, model: nn.Module, id_data: DataLike, *, anomalies: DataLike | None = None
    ) -> Self:
        """Learn what in-distribution inputs look like to `model`. Returns self.

        Args:
            model: the classifier; images in [0, 1] → logits. Left as it was.
            id_data: in-distribution images (ImageSet or float N×C×H×W tensor in [0, 1]).
            anomalies: only for detectors with ``needs_anomalies``: known anomalous inputs.
        """
        data = as_image_set(id_data, "id_data")
        check_images(data.images if data.images.is_floating_point() else data.as_float(slice(0, 1)))
        if self.needs_anomalies and anomalies is None:
            raise InvalidInputError(
                f"{self.name} needs anomalies to fit: pass anomalies=… "
                "(e.g. FGSM of training images)"
            )
        anomaly_set = None if anomalies is None else as_image_set(anomalies, "anomalies")
        self._validate_params()
        with eval_mode(model):
            logits = model(data.as_float(slice(0, 1)).to(model_device(model)))
        self.input_shape_ = data.image_shape
        self.num_classes_ = int(logits.shape[1])
        self.model_digest_ = weights_digest(model)
        self.model_ref_: dict[str, str] = {}
        self.thresholds_: torch.Tensor | None = None
        self.calibration_tpr_: float | None = None
        with eval_mode(model):
            self._fit(model, data, anomaly_set)
        self.fitted_ = True
        return self

    def _unmodelled_classes(self) -> torch.Tensor | None:
        """(K,) bool: classes the fit learned nothing of (too few inputs), or None for none."""
        return None

    def fit_summary(self) -> dict[str, str]:
        """What `fit` chose on its own (e.g. the uniform detector's MDL), for reports; {} for
        detectors that choose nothing."""
        return {}

    def _validate_params(self) -> None:  # noqa: B027  (optional hook)
        """Check hyper-parameters; raise ValueError with a clear message. Called by `fit`."""

    @abstractmethod
    def _fit(self, model: nn.Module, data: ImageSet, anomalies: ImageSet | None) -> None:
        """Learn state from `data` (and `anomalies` when the detector needs them)."""

    # ----------------------------------------------------------------------------------- scoring
    def check_fitted(self) -> None:
        """Raise NotFittedError if `fit` was not called."""
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(model, id_data)")

    def check_model(self, model: nn.Module) -> None:
        """Raise ModelMismatchError unless `model` has the weights the detector was fitted on."""
        self.check_fitted()
        digest = weights_digest(model)
        if digest != self.model_digest_:
            ref = self.model_ref_.get("name", "the model it was fitted on")
            raise ModelMismatchError(
                f"this detector was fitted on {ref} (weights digest {self.model_digest_}); the "
                f"model given has weights digest {digest}. Refit the detector for this model."
            )

    def _batches(self, x: DataLike, batch_size: int) -> Iterator[torch.Tensor]:
        if isinstance(x, ImageSet):
            if len(x) == 0:
                raise InvalidInputError(f"{x.name}: empty set, no images to score")
            for xb in x.batches(batch_size):
                yield check_images(xb, self.input_shape_)
        else:
            check_images(x, self.input_shape_)
            for start in range(0, x.shape[0], batch_size):
                yield x[start : start + batch_size]

    def score_and_predict(
        self, model: nn.Module, x: DataLike, batch_size: int = 256
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores (N,) float64, higher = more anomalous, and the model's predicted classes (N,)."""
        self.check_fitted()
        device = model_device(model)
        scores, predicted = [], []
        grad = torch.enable_grad() if self.needs_gradients else torch.no_grad()
        with eval_mode(model), grad:
            for xb in self._batches(x, batch_size):
                s, p = self._score_batch(model, xb.to(device))
                scores.append(s.detach().to("cpu", torch.float64))
                predicted.append(p.detach().cpu())
        return torch.cat(scores), torch.cat(predicted)

    def score(self, model: nn.Module, x: DataLike, batch_size: int = 256) -> torch.Tensor:
        """One anomaly score per input, shape (N,); higher = more anomalous."""
        return self.score_and_predict(model, x, batch_size)[0]

    @abstractmethod
    def _score_batch(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and predicted classes of one validated batch on the model's device."""

    # ------------------------------------------------------------------------------ thresholds
    def calibrate(self, model: nn.Module, id_val: DataLike, tpr: float = 0.95) -> Self:
        """Store per-class thresholds accepting `tpr` of the held-out ID inputs of each class."""
        if not 0.0 < tpr < 1.0:
            raise ValueError(f"tpr must be in (0, 1), got {tpr}")
        scores, predicted = self.score_and_predict(model, id_val)
        self.thresholds_ = class_thresholds(
            scores, predicted, self.num_classes_, tpr, unmodelled=self._unmodelled_classes()
        )
        self.calibration_tpr_ = tpr
        return self

    def flag(self, scores: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        """Booleans (True = anomaly) from scores and predicted classes, using stored thresholds."""
        if self.thresholds_ is None:
            raise NotFittedError("no thresholds: call calibrate(model, id_val) first")
        return scores > self.thresholds_[predicted]

    def predict(self, model: nn.Module, x: DataLike, batch_size: int = 256) -> torch.Tensor:
        """True where an input is flagged as anomalous (needs `calibrate` first)."""
        self.check_fitted()
        if self.thresholds_ is None:
            raise NotFittedError("no thresholds: call calibrate(model, id_val) first")
        scores, predicted = self.score_and_predict(model, x, batch_size)
        return self.flag(scores, predicted)

    # ---------------------------------------------------------------------------------- saving
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        """Learned tensors to store (subclasses extend)."""
        return {}

    def _state_meta(self) -> dict[str, Any]:
        """Learned JSON-serialisable state to store (subclasses extend)."""
        return {}

    def _set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:  # noqa: B027
        """Restore what `_state_tensors` and `_state_meta` stored (subclasses extend)."""

    def _after_load(self, folder: Path) -> None:  # noqa: B027  (optional hook)
        """Called by `load` once the state is restored, with the detector's folder (for files a
        detector keeps apart from ``detector.json``, e.g. DAAIN's key file)."""

    def save(self, path: str | Path) -> Path:
        """Write the fitted detector to folder `path` (created): JSON + safetensors, no pickle."""
        self.check_fitted()
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self._state_tensors().items()}
        if self.thresholds_ is not None:
            tensors["thresholds_"] = self.thresholds_
        tensor_path = folder / TENSORS_NAME
        save_file(tensors, str(tensor_path))
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "detector": self.name,
            "params": self.get_params(),
            "input_shape": list(self.input_shape_),
            "num_classes": self.num_classes_,
            "model": {"weights_digest": self.model_digest_, **self.model_ref_},
            "calibration_tpr": self.calibration_tpr_,
            "state": self._state_meta(),
            "tensors_sha256": file_digest(tensor_path),
        }
        (folder / JSON_NAME).write_text(json.dumps(doc, indent=2, sort_keys=True))
        return folder

    @classmethod
    def load(cls, path: str | Path) -> Detector:
        """Read a detector saved with `save`. Raises FormatError on anything not written by it."""
        from tripwire.detectors.registry import get_detector_class

        folder = Path(path)
        doc = _read_json(folder / JSON_NAME)
        tensor_path = folder / TENSORS_NAME
        if not tensor_path.is_file():
            raise FormatError(f"{folder}: {TENSORS_NAME} is missing")
        if file_digest(tensor_path) != doc["tensors_sha256"]:
            raise FormatError(
                f"{tensor_path}: checksum does not match {JSON_NAME}; the file was modified"
            )
        try:
            tensors = load_file(str(tensor_path))
        except (SafetensorError, OSError, ValueError) as e:
            raise FormatError(f"{tensor_path}: not a valid safetensors file ({e})") from None
        klass = get_detector_class(doc["detector"])
        if cls is not Detector and not issubclass(klass, cls):
            raise FormatError(f"{folder}: holds a {klass.__name__}, not a {cls.__name__}")
        # JSON has no tuples: sequences of hyper-parameters come back as tuples.
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in doc["params"].items()}
        try:
            det = klass(**params)
        except TypeError as e:
            raise FormatError(f"{folder}: parameters do not fit {klass.__name__} ({e})") from None
        det.input_shape_ = tuple(doc["input_shape"])
        det.num_classes_ = int(doc["num_classes"])
        model = dict(doc["model"])
        det.model_digest_ = str(model.pop("weights_digest"))
        det.model_ref_ = {str(k): str(v) for k, v in model.items()}
        det.thresholds_ = tensors.pop("thresholds_", None)
        det.calibration_tpr_ = doc["calibration_tpr"]
        try:
            det._set_state(tensors, doc["state"])
        except (KeyError, ValueError, TypeError) as e:
            raise FormatError(f"{folder}: incomplete detector state ({e})") from None
        det.fitted_ = True
        det._after_load(folder)
        return det


_REQUIRED = {
    "format": str,
    "format_version": int,
    "detector": str,
    "params": dict,
    "input_shape": list,
    "num_classes": int,
    "model": dict,
    "state": dict,
    "tensors_sha256": str,
}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FormatError(f"{path.parent}: not a saved detector ({path.name} is missing)")
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise FormatError(f"{path}: not a tripwire detector file")
    if doc.get("format_version") != FORMAT_VERSION:
        raise FormatError(
            f"{path}: format version {doc.get('format_version')} is not supported "
            f"(this tripwire reads version {FORMAT_VERSION})"
        )
    for key, typ in _REQUIRED.items():
        if not isinstance(doc.get(key), typ):
            raise FormatError(f"{path}: field {key!r} missing or not a {typ.__name__}")
    if "weights_digest" not in doc["model"]:
        raise FormatError(f"{path}: field 'model.weights_digest' missing")
    return doc
