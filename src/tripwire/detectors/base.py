"""The detector protocol every tripwire detector follows.

* ``fit(model, id_data)`` learns from in-distribution data only (detectors that need anomalies to
  fit say so with ``needs_anomalies = True`` and take them as the explicit ``anomalies`` argument);
  returns ``self``.
* ``score(model, x)`` → one float per input, shape ``(N,)``; **higher = more anomalous**.
* ``calibrate(model, id_val, tpr=0.95)`` stores one threshold per predicted class such that
  ``tpr`` of the held-out ID inputs predicted as that class are accepted (Zhao et al. §4, eq. 4).
* ``predict(model, x)`` → booleans, True = anomaly (score above the threshold of its class).
* ``save(path)`` / ``Detector.load(path)``: a folder with ``detector.json`` (hyper-parameters,
  small state, the model's weights digest, a digest over everything) and the tensors in
  safetensors (`tripwire.detectors.fileformat`). Nothing is ever unpickled, imported or called;
  a tampered or foreign file raises `FormatError`.

The model is passed at every call, never stored: a saved detector is data only.
Hyper-parameters live in ``__init__`` (stored verbatim, validated in ``fit``); learned state ends
in ``_``.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self, dataclass_transform

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from tripwire.data.base import ImageSet, check_images, from_numpy_images, to_float
from tripwire.detectors.fileformat import (
    FORMAT,
    FORMAT_VERSION,
    JSON_NAME,
    DetectorFile,
    params_schema,
    read_detector,
    validated_params,
    write_detector,
)
from tripwire.detectors.registry import create_detector, get_detector_class, list_detectors
from tripwire.detectors.state import meta_of, restore, tensors_of
from tripwire.errors import (
    DataError,
    FormatError,
    InvalidInputError,
    ModelMismatchError,
    NotFittedError,
    TripwireError,
)
from tripwire.features import eval_mode, model_device, model_dtype
from tripwire.models.digest import weights_digest
from tripwire.progress import track

logger = logging.getLogger(__name__)

# Fewer calibration images than this predicted as a class, and `calibrate` warns: the 95 %
# quantile of ~100 scores already moves by about ±2 percentage points of coverage.
FEW_CALIBRATION_IMAGES = 100

DataLike = ImageSet | torch.Tensor | np.ndarray
Images = torch.Tensor | np.ndarray
ScoreInput = ImageSet | Images | Iterable[Images] | Iterable[Sequence[Images]]


def as_image_batch(x: object, image_shape: tuple[int, ...] | None = None) -> object:
    """The forms users hold images in, as a float N×C×H×W tensor: numpy arrays (N×H×W,
    N×H×W×C or N×C×H×W; uint8, or float in [0, 1]), uint8 tensors (0…255, divided by 255), and
    one C×H×W image of `image_shape`. Anything else passes through unchanged, for
    `check_images` to say what is wrong with it."""
    if isinstance(x, np.ndarray):
        try:
            x = from_numpy_images(x, "numpy array")
        except DataError as e:
            raise InvalidInputError(str(e)) from None
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.uint8:
            x = to_float(x)
        if image_shape is not None and tuple(x.shape) == tuple(image_shape):
            x = x.unsqueeze(0)  # one image
    return x


def as_image_set(data: DataLike, name: str = "input") -> ImageSet:
    """An ImageSet of images in any form `as_image_batch` takes (ImageSets pass through)."""
    if isinstance(data, ImageSet):
        return data
    images = check_images(as_image_batch(data))
    return ImageSet(name, images.detach().to("cpu", torch.float32))


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


def check_tpr(tpr: float) -> None:
    """Raise ValueError unless 0 < `tpr` < 1."""
    if not 0.0 < tpr < 1.0:
        raise ValueError(f"tpr must be in (0, 1), got {tpr}")


def _conformal_quantile(scores: np.ndarray, tpr: float) -> float:
    """The ⌈(n + 1)·tpr⌉-th smallest score (the largest if that rank exceeds n)."""
    rank = min(math.ceil((len(scores) + 1) * tpr - 1e-9), len(scores))
    return float(np.partition(scores, rank - 1)[rank - 1])


@dataclass_transform(kw_only_default=True, eq_default=False)
class Detector(ABC):
    """Base class of all detectors. Subclasses implement `_fit`, `_score_batch` and state I/O.

    A detector declares its hyper-parameters once, as annotated class fields with defaults
    (their types from `tripwire.detectors.params`): every subclass is a keyword-only dataclass,
    so ``__init__``, `get_params`, `save`/`load` and the checks of `_validate_params` all come
    from that declaration. The state that `fit` learns is declared the same way, as fields
    ending in ``_`` made with `tripwire.detectors.state.learned`, which `save` and `load` store
    and restore.
    """

    name: ClassVar[str]
    needs_anomalies: ClassVar[bool] = False
    needs_gradients: ClassVar[bool] = False
    # the paper's detector, whose benchmark rows also show the paper's (transductive) protocol
    reproduces_paper_protocol: ClassVar[bool] = False

    # why the detector cannot be written as a graph by `tripwire.export` ("" = it can)
    export_refusal: ClassVar[str] = ""
    # hyper-parameters that `get_params` and a saved detector leave out (e.g. a secret key)
    secret_params: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclass(kw_only=True, eq=False, repr=False)(cls)

    def reads_layers(self) -> bool:
        """Whether the detector hooks the model's layers (True) or reads its logits only."""
        return True

    def check_tappable(self, model: nn.Module) -> None:
        """An `InvalidInputError` when the detector reads layers that `model` cannot show: a
        TorchScript model runs as one compiled graph, whose layers take no hooks."""
        if not self.reads_layers() or not any(
            isinstance(m, torch.jit.ScriptModule) for m in model.modules()
        ):
            return
        logits_only = [n for n in list_detectors() if not create_detector(n).reads_layers()]
        raise InvalidInputError(
            f"{self.name} reads the model's layers, and a TorchScript model runs as one compiled "
            "graph whose layers take no hooks. On it, use a detector that reads only the logits "
            f"({', '.join(logits_only)}), or give the model as Python code ('module:function' "
            "and its weights)"
        )

    # ----------------------------------------------------------------------------------- params
    @classmethod
    def param_names(cls) -> list[str]:
        """The hyper-parameters (the dataclass fields of ``__init__``) that `get_params` reports
        and `save` stores."""
        sig = inspect.signature(cls.__init__)
        return [k for k in sig.parameters if k != "self" and k not in cls.secret_params]

    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters given to ``__init__``, as stored (not the `secret_params`)."""
        return {k: getattr(self, k) for k in self.param_names()}

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
            id_data: in-distribution images: an ImageSet, or a tensor or numpy array as
                `score_and_predict` takes them.
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
        self.check_tappable(model)
        with eval_mode(model):
            logits = model(data.as_float(slice(0, 1)).to(model_device(model)))
        self._begin_fit(model, data.image_shape, int(logits.shape[1]))
        with eval_mode(model):
            self._fit(model, data, anomaly_set)
        self.fitted_ = True
        return self

    def _begin_fit(self, model: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> None:
        """Record what every fit records: input shape, classes, the model's weights digest; and
        forget earlier thresholds."""
        c, h, w = input_shape
        self.input_shape_ = (c, h, w)
        self.num_classes_ = num_classes
        self.model_digest_ = weights_digest(model)
        self.model_ref_: dict[str, Any] = {}
        self.thresholds_: torch.Tensor | None = None
        self.calibration_tpr_: float | None = None

    def _unmodelled_classes(self) -> torch.Tensor | None:
        """(K,) bool: classes the fit learned nothing of (too few inputs), or None for none."""
        return None

    def fit_summary(self) -> dict[str, str]:
        """What `fit` chose on its own (e.g. the uniform detector's MDL), for reports; {} for
        detectors that choose nothing."""
        return {}

    def layer_choice_criteria(self) -> tuple[str, dict[str, float]] | None:
        """The layer `fit` chose and every candidate's criterion on validation data (in model
        order), for detectors that choose a layer at fit; None for the others."""
        return None

    def _validate_params(self) -> None:
        """Check the hyper-parameters against their declared types (ranges and choices:
        `tripwire.detectors.params`), strictly, then `_check_params`. Called at creation
        (`create_detector`), `fit` and `load`.

        Raises:
            ValueError: naming the parameter, what it accepts and what it got.
        """
        try:
            params_schema(type(self)).model_validate(self.get_params())
        except ValidationError as e:
            errors = e.errors(include_url=False)
            name = errors[0]["loc"][0]
            accepts = "; or ".join(dict.fromkeys(x["msg"] for x in errors if x["loc"][0] == name))
            raise ValueError(f"{name}: {accepts}; got {errors[0]['input']!r}") from None
        self._check_params()

    def _check_params(self) -> None:  # noqa: B027  (optional hook)
        """Rules the hints cannot state, tying parameters together (e.g. a bank of at least
        k features); raise ValueError naming the parameters."""

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

    def verify_model(self, model: nn.Module) -> None:
        """`check_model`, computed once per model object and again only when one of its
        parameters or buffers is replaced or changed in place (their autograd version counters
        move; changes made through ``tensor.data`` bypass those counters — call `check_model`
        after such edits)."""
        stamp = _weights_stamp(model)
        if getattr(self, "_verified_stamp", None) != stamp:
            self.check_model(model)
            self._verified_stamp = stamp

    def _batches(self, x: ScoreInput, batch_size: int) -> Iterator[torch.Tensor]:
        """Validated batches of at most `batch_size` images (float16/float64 are accepted)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(x, ImageSet):
            if len(x) == 0:
                raise InvalidInputError(f"{x.name}: empty set, no images to score")
            for xb in x.batches(batch_size):
                yield check_images(xb, self.input_shape_)
        elif isinstance(x, torch.Tensor | np.ndarray):
            images = as_image_batch(x, self.input_shape_)
            yield from check_images(images, self.input_shape_).split(batch_size)
        elif isinstance(x, Iterable) and not isinstance(x, str | bytes):
            n = 0
            for item in x:
                images = item[0] if isinstance(item, tuple | list) and item else item
                images = as_image_batch(images, self.input_shape_)
                for part in check_images(images, self.input_shape_).split(batch_size):
                    n += len(part)
                    yield part
            if n == 0:
                raise InvalidInputError("no images to score: the iterable yielded no batch")
        else:
            raise InvalidInputError(
                "expected images as an N×C×H×W tensor or numpy array (float in [0, 1], or "
                "uint8), an ImageSet or an iterable of such batches, got "
                f"{type(x).__name__}"
            )

    def score_and_predict(
        self,
        model: nn.Module,
        x: ScoreInput,
        batch_size: int = 256,
        *,
        verify_model: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores (N,) float64, higher = more anomalous, and the model's predicted classes (N,).

        Args:
            model: the classifier the detector was fitted on (its weights are checked, see
                `verify_model`).
            x: N×C×H×W images — float in [0, 1] (float16/64 are cast to the model's dtype)
                or uint8 0…255, a torch tensor or a numpy array (N×H×W×C too), or one C×H×W
                image — an ImageSet, or an iterable of such batches (or of ``(images, labels)``
                pairs, as a ``DataLoader`` yields), read one batch at a time.
            batch_size: images per forward pass.
            verify_model: check that `model` has the weights the detector was fitted on
                (`ModelMismatchError` otherwise); False for a model fine-tuned on purpose.
        """
        scores, predicted = self._over_batches(
            model, x, batch_size, verify_model, self._score_batch
        )
        return scores.to(torch.float64), predicted

    def _over_batches(
        self,
        model: nn.Module,
        x: ScoreInput,
        batch_size: int,
        verify_model: bool,
        per_batch: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, ...]],
    ) -> tuple[torch.Tensor, ...]:
        """`per_batch(model, batch)` → tensors (values, predicted classes, …) over every batch of
        `x`, on the model's device and dtype, model in eval mode; each gathered on the CPU."""
        self.check_fitted()
        if verify_model:
            self.verify_model(model)
        self.check_tappable(model)
        device, dtype = model_device(model), model_dtype(model)
        parts: list[list[torch.Tensor]] = []
        grad = torch.enable_grad() if self.needs_gradients else torch.no_grad()
        n = len(x) if isinstance(x, ImageSet | torch.Tensor | np.ndarray) else None
        total = None if n is None else math.ceil(n / batch_size)
        batches = track(self._batches(x, batch_size), f"{self.name}: scoring", total)
        with eval_mode(model), grad:
            for xb in batches:
                parts.append([t.detach().cpu() for t in per_batch(model, xb.to(device, dtype))])
        return tuple(torch.cat(list(column)) for column in zip(*parts, strict=True))

    def score(
        self,
        model: nn.Module,
        x: ScoreInput,
        batch_size: int = 256,
        *,
        verify_model: bool = True,
    ) -> torch.Tensor:
        """One anomaly score per input, shape (N,); higher = more anomalous (arguments as
        `score_and_predict`)."""
        return self.score_and_predict(model, x, batch_size, verify_model=verify_model)[0]

    @abstractmethod
    def _score_batch(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and predicted classes of one validated batch on the model's device."""

    # ------------------------------------------------------------------------------ thresholds
    def calibrate(self, model: nn.Module, id_val: DataLike, tpr: float = 0.95) -> Self:
        """Store per-class thresholds accepting `tpr` of the held-out ID inputs of each class.

        `id_val` must be in-distribution images the model did **not** train on: on its own
        training images a model is more confident than on new inputs, and thresholds set there
        flag more than 1 − `tpr` of new clean inputs."""
        check_tpr(tpr)
        self._set_thresholds(*self._calibration_scores(model, id_val), tpr)
        return self

    def _set_thresholds(self, scores: torch.Tensor, predicted: torch.Tensor, tpr: float) -> None:
        """Per-class thresholds from held-out ID scores and predicted classes."""
        check_tpr(tpr)
        self.thresholds_ = class_thresholds(
            scores, predicted, self.num_classes_, tpr, unmodelled=self._unmodelled_classes()
        )
        self.calibration_tpr_ = tpr
        counts = torch.bincount(predicted.cpu(), minlength=self.num_classes_)
        if int(counts.min()) < FEW_CALIBRATION_IMAGES:
            logger.warning(
                "thresholds from %d calibration images: %d of %d classes have fewer than %d "
                "(fewest: %d, class %d), so their thresholds are coarse and the share of new "
                "clean inputs flagged can be far from 1 − TPR = %.3g; calibrate on more "
                "in-distribution images the model never trained on",
                len(predicted),
                int((counts < FEW_CALIBRATION_IMAGES).sum()),
                self.num_classes_,
                FEW_CALIBRATION_IMAGES,
                int(counts.min()),
                int(counts.argmin()),
                1 - tpr,
            )

    def _calibration_scores(
        self, model: nn.Module, id_val: DataLike
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The scores and predicted classes the thresholds are set on: those of all of `id_val`.
        A detector with normalisation constants fitted on ID data re-fits them here on a part of
        `id_val` and returns the scores of the rest (see `UniformDetector`)."""
        return self.score_and_predict(model, id_val)

    def flag(self, scores: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        """Booleans (True = anomaly) from scores and predicted classes, using stored thresholds."""
        if self.thresholds_ is None:
            raise NotFittedError("no thresholds: call calibrate(model, id_val) first")
        return scores > self.thresholds_[predicted]

    def predict(
        self,
        model: nn.Module,
        x: ScoreInput,
        batch_size: int = 256,
        *,
        verify_model: bool = True,
    ) -> torch.Tensor:
        """True where an input is flagged as anomalous (needs `calibrate` first; arguments as
        `score_and_predict`)."""
        self.check_fitted()
        if self.thresholds_ is None:
            raise NotFittedError("no thresholds: call calibrate(model, id_val) first")
        scores, predicted = self.score_and_predict(model, x, batch_size, verify_model=verify_model)
        return self.flag(scores, predicted)

    # ---------------------------------------------------------------------------------- saving
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        """Learned tensors to store: the declared ones (`tripwire.detectors.state`); detectors
        with composite state extend this."""
        return tensors_of(self)

    def _state_meta(self) -> dict[str, Any]:
        """Learned JSON values to store: the declared ones; detectors with composite state
        extend this."""
        return meta_of(self)

    def _set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore what `_state_tensors` and `_state_meta` stored."""
        restore(self, tensors, meta)

    def _after_load(self, folder: Path) -> None:  # noqa: B027  (optional hook)
        """Called by `load` once the state is restored, with the detector's folder (for files a
        detector keeps apart from ``detector.json``, e.g. DAAIN's key file)."""

    def save(self, path: str | Path, *, key: bytes | None = None) -> Path:
        """Write the fitted detector to folder `path` (created): JSON + safetensors, no pickle.

        The write is atomic and locked (`tripwire.detectors.fileformat`): a detector already in
        `path` stays loadable until the new one replaces it in one step, and a second process
        saving to `path` meanwhile gets `DetectorBusyError`. With `key` (bytes, ≥ 16) the file
        is signed, and `load(path, key=…)` accepts it only with the same key.
        """
        self.check_fitted()
        tensors = {k: v.detach().cpu().contiguous() for k, v in self._state_tensors().items()}
        if self.thresholds_ is not None:
            tensors["thresholds_"] = self.thresholds_.detach().cpu().contiguous()
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tripwire_version": _version(),
            "detector": self.name,
            "params": self.get_params(),
            "input_shape": list(self.input_shape_),
            "num_classes": self.num_classes_,
            "model": {"weights_digest": self.model_digest_, **self.model_ref_},
            "calibration_tpr": self.calibration_tpr_,
            "state": self._state_meta(),
        }
        # JSON has no tuples: the same document as the one read back
        return write_detector(path, json.loads(json.dumps(doc)), tensors, key)

    @classmethod
    def load(cls, path: str | Path, *, key: bytes | None = None) -> Detector:
        """Read a detector saved with `save`.

        Nothing named in the files is imported, called or trained: the model is passed at
        every call and must have the weights digest recorded here.

        Args:
            path: the detector's folder.
            key: the signing key, when the detector must be signed with it.

        Raises:
            FormatError: anything not written by `save` — a field of the wrong type or range
                (named), a digest or signature that does not match, state that does not fit
                the detector.
        """
        folder = Path(path)
        doc, tensors = read_detector(folder, key)
        origin = str(folder / JSON_NAME)
        try:
            klass = get_detector_class(doc.detector)
        except TripwireError:
            raise FormatError(
                f"{origin}: field 'detector': unknown detector {doc.detector!r}"
            ) from None
        if cls is not Detector and not issubclass(klass, cls):
            raise FormatError(f"{folder}: holds a {klass.__name__}, not a {cls.__name__}")
        det = klass(**validated_params(klass, doc.params, origin))
        try:
            det._validate_params()
        except ValueError as e:
            raise FormatError(f"{origin}: field 'params': {e}") from None
        c, h, w = doc.input_shape
        det.input_shape_ = (c, h, w)
        det.num_classes_ = doc.num_classes
        det.model_digest_ = doc.model.weights_digest
        det.model_ref_ = doc.model.model_dump(exclude={"weights_digest"}, exclude_none=True)
        det.thresholds_ = _checked_thresholds(tensors.pop("thresholds_", None), doc, origin)
        det.calibration_tpr_ = doc.calibration_tpr
        try:
            det._set_state(tensors, doc.state)
            det._check_state()
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError, AttributeError) as e:
            raise FormatError(
                f"{origin}: the state does not fit a {klass.__name__} ({type(e).__name__}: {e})"
            ) from None
        det.fitted_ = True
        det._after_load(folder)
        return det

    def _check_state(self) -> None:  # noqa: B027  (optional hook)
        """After `_set_state` on load: raise ValueError where the restored state does not fit
        ``num_classes_`` or itself (shapes, dtypes, finiteness)."""


def _checked_thresholds(
    thresholds: torch.Tensor | None, doc: DetectorFile, origin: str
) -> torch.Tensor | None:
    """The stored thresholds, which must match ``calibration_tpr`` and ``num_classes``."""
    if (thresholds is None) != (doc.calibration_tpr is None):
        raise FormatError(f"{origin}: field 'calibration_tpr' does not match the stored thresholds")
    if thresholds is None:
        return None
    if thresholds.shape != (doc.num_classes,) or not thresholds.is_floating_point():
        raise FormatError(
            f"{origin}: field 'num_classes' is {doc.num_classes} but the thresholds are "
            f"{thresholds.dtype} of shape {tuple(thresholds.shape)}"
        )
    if not bool(torch.isfinite(thresholds).all()):
        raise FormatError(f"{origin}: the thresholds are not all finite")
    return thresholds


def _weights_stamp(model: nn.Module) -> tuple[int, tuple[tuple[str, int, int], ...]]:
    """What changes when a model's weights may have: the model object, and each parameter's and
    buffer's identity and in-place version counter."""
    state = model.state_dict(keep_vars=True)
    return id(model), tuple((name, id(t), t._version) for name, t in state.items())


def _version() -> str:
    from tripwire import __version__

    return __version__
