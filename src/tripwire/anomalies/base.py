"""The anomaly protocol: an `AnomalySet` of generated inputs plus the `Generator` that makes it.

Everything that produces anomalies from a model — white-box attacks, noise, fooling images —
returns an `AnomalySet`: every produced input (successes and failures) as float32 N×C×H×W in
[0, 1], with per-input metadata (success, source index, true label, the model's new class and
confidence, perturbation norms) and the settings actually used. Sets are saved as one `.npz`
(``allow_pickle=False``) whose metadata is a JSON string inside it — nothing to unpickle.

Shared machinery for the generators lives here too: input checks, `model_guard` (eval mode and
frozen parameters during generation, restored afterwards) and batched prediction.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from tripwire.batching import batch_slices
from tripwire.errors import FormatError, InvalidInputError
from tripwire.features import eval_mode, model_device
from tripwire.paths import atomic_write

FORMAT = "tripwire-anomaly-set"
FORMAT_VERSION = 1

_TENSOR_FIELDS = (
    "images",
    "success",
    "source_index",
    "labels",
    "predicted",
    "confidence",
    "target",
)


@dataclass
class AnomalySet:
    """Generated anomalous inputs and what happened to each.

    Attributes:
        kind: the generator's name, e.g. ``"fgsm"``, ``"bim-a"``, ``"gaussian"``, ``"fooling"``.
        images: N×C×H×W float32 in [0, 1] — every produced input, successes and failures.
        success: (N,) bool — the attack flipped the prediction away from the true label (also
            for targeted attacks; see `summary()["target_rate"]`); fooling: the target class at
            the confidence goal; True for noise.
        source_index: (N,) int64 index into the ``x`` given to ``generate`` (-1 where none).
        labels: (N,) int64 true label of the source (-1 where none).
        predicted: (N,) int64 the model's class on the anomalous image.
        confidence: (N,) float32 max softmax on the anomalous image.
        norms: ``"linf"``, ``"l2"``, ``"l0"`` of the perturbation, each (N,) (attacks only).
        params: the JSON-serialisable settings actually used.
        seed: the seed the set was generated with.
        target: (N,) int64 target class for targeted generators (JSMA, fooling), else -1.
        model_digest: `weights_digest` of the model the set was made with ("" if unknown).

    Examples:
        >>> s = make_anomalies("fgsm", model, x, y)  # doctest: +SKIP
        >>> s.summary()["success_rate"]  # doctest: +SKIP
        0.93
    """

    kind: str
    images: torch.Tensor
    success: torch.Tensor
    source_index: torch.Tensor
    labels: torch.Tensor
    predicted: torch.Tensor
    confidence: torch.Tensor
    norms: dict[str, torch.Tensor] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    target: torch.Tensor | None = None
    model_digest: str = ""

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.target is None:
            self.target = torch.full((n,), -1, dtype=torch.int64)
        for name in _TENSOR_FIELDS[1:]:
            t = getattr(self, name)
            if t.shape != (n,):
                raise FormatError(f"AnomalySet.{name} must have shape ({n},), got {tuple(t.shape)}")
        for name, t in self.norms.items():
            if t.shape != (n,):
                raise FormatError(f"AnomalySet.norms[{name!r}] must have shape ({n},)")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: torch.Tensor) -> AnomalySet:
        """The entries at `index` (a boolean mask or integer index)."""
        kw = {name: getattr(self, name)[index] for name in _TENSOR_FIELDS}
        norms = {k: v[index] for k, v in self.norms.items()}
        return AnomalySet(
            kind=self.kind,
            norms=norms,
            params=dict(self.params),
            seed=self.seed,
            model_digest=self.model_digest,
            **kw,
        )

    def successful(self) -> AnomalySet:
        """Only the entries whose generation succeeded."""
        return self.subset(self.success)

    def summary(self) -> dict[str, Any]:
        """n, number and rate of successes, mean norms and mean confidence (over successes).

        Norm and confidence means are over the successful entries (NaN if there are none).
        Targeted attacks (JSMA) add ``target_rate``: the share of inputs that reached the target.
        """
        n = len(self)
        ok = self.success
        n_ok = int(ok.sum())

        def mean(t: torch.Tensor) -> float:
            return float(t[ok].double().mean()) if n_ok else float("nan")

        out: dict[str, Any] = {
            "kind": self.kind,
            "n": n,
            "n_success": n_ok,
            "success_rate": n_ok / n if n else float("nan"),
            "mean_confidence": mean(self.confidence),
        }
        for k, v in self.norms.items():
            out[f"mean_{k}"] = mean(v)
        targeted = (self.target >= 0) & (self.labels >= 0) if self.target is not None else None
        if targeted is not None and self.target is not None and bool(targeted.any()):
            hit = self.predicted[targeted] == self.target[targeted]
            out["target_rate"] = float(hit.float().mean())
        return out

    def save(self, path: str | Path) -> Path:
        """Write the set to one `.npz` file (arrays + a JSON metadata string, no pickle)."""
        path = Path(path)
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "kind": self.kind,
            "params": self.params,
            "seed": self.seed,
            "model_digest": self.model_digest,
            "norms": sorted(self.norms),
        }
        arrays = {name: getattr(self, name).detach().cpu().numpy() for name in _TENSOR_FIELDS}
        arrays.update({f"norm_{k}": v.detach().cpu().numpy() for k, v in self.norms.items()})
        arrays["meta"] = np.array(json.dumps(meta))
        with atomic_write(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> AnomalySet:
        """Read a set written by `save`. Raises FormatError on anything else."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format") != FORMAT:
                    raise FormatError(f"{path}: not a tripwire anomaly set")
                if meta.get("version") != FORMAT_VERSION:
                    raise FormatError(f"{path}: unsupported version {meta.get('version')!r}")
                tensors = {name: torch.from_numpy(z[name].copy()) for name in _TENSOR_FIELDS}
                norms = {k: torch.from_numpy(z[f"norm_{k}"].copy()) for k in meta["norms"]}
        except FormatError:
            raise
        except FileNotFoundError:
            raise FormatError(f"{path}: no such file") from None
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
            raise FormatError(f"{path}: not a valid tripwire anomaly set ({e})") from None
        return cls(
            kind=meta["kind"],
            norms=norms,
            params=meta["params"],
            seed=int(meta["seed"]),
            model_digest=meta.get("model_digest", ""),
            **tensors,
        )


@runtime_checkable
class Generator(Protocol):
    """Anything that turns a model (and optionally ID inputs) into an `AnomalySet`."""

    name: str
    defaults: dict[str, Any]
    params: dict[str, Any]

    def generate(
        self, model: nn.Module, x: torch.Tensor | None, y: torch.Tensor | None, *, seed: int = 0
    ) -> AnomalySet: ...


class BaseGenerator:
    """Common constructor: hyper-parameters merged onto `defaults`, unknown names refused.

    Subclasses set `name`, `defaults`, `description` and implement `generate`. `batch_size` only
    bounds memory; results do not depend on it, so it is not part of `params` (nor of cache keys).
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    description: ClassVar[str] = ""
    needs_inputs: ClassVar[bool] = True
    default_batch_size: ClassVar[int] = 500

    def __init__(self, batch_size: int | None = None, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise InvalidInputError(
                f"{self.name}: unknown parameter(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(self.defaults)) or 'none'}"
            )
        self.params: dict[str, Any] = {**self.defaults, **params}
        self.batch_size = int(batch_size or self.default_batch_size)
        self._validate()

    def _validate(self) -> None:
        """Check `self.params`; raise InvalidInputError naming the bad one."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    def generate(
        self, model: nn.Module, x: torch.Tensor | None, y: torch.Tensor | None, *, seed: int = 0
    ) -> AnomalySet:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Shared helpers


def require_positive(gen: BaseGenerator, *names: str, allow_zero: bool = False) -> None:
    """Raise InvalidInputError unless every named parameter is a number > 0 (≥ 0 if allowed)."""
    for n in names:
        v = gen.params[n]
        ok = isinstance(v, int | float) and not isinstance(v, bool)
        if not ok or v < 0 or (v == 0 and not allow_zero):
            raise InvalidInputError(f"{gen.name}: {n} must be a positive number, got {v!r}")


def require_count(gen: BaseGenerator, *names: str, minimum: int = 1) -> None:
    """Raise InvalidInputError unless every named parameter is an integer ≥ `minimum`."""
    for n in names:
        v = gen.params[n]
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise InvalidInputError(f"{gen.name}: {n} must be an integer ≥ {minimum}, got {v!r}")


def check_labels(y: torch.Tensor | None, n: int, name: str) -> torch.Tensor:
    """y as int64 of shape (n,), or an InvalidInputError."""
    if y is None:
        raise InvalidInputError(f"{name}: attacks need the true labels y")
    y = torch.as_tensor(y)
    if y.shape != (n,) or y.is_floating_point() or y.dtype == torch.bool:
        raise InvalidInputError(
            f"{name}: y must be integer labels of shape ({n},), got {y.dtype} {tuple(y.shape)}"
        )
    return y.to(torch.int64)


@contextmanager
def model_guard(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (`eval_mode`) and no parameter gradients inside; requires_grad restored."""
    grads = [(p, p.requires_grad) for p in model.parameters()]
    with eval_mode(model):
        for p, _ in grads:
            p.requires_grad_(False)
        try:
            yield model
        finally:
            for p, flag in grads:
                p.requires_grad_(flag)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The model's logits for x (float32 on CPU), computed in batches on the model's device."""
    device = model_device(model)
    out = [model(x[s].to(device)).float().cpu() for s in batch_slices(len(x), batch_size)]
    logits = torch.cat(out)
    if logits.ndim != 2:
        raise InvalidInputError(
            f"the model must return N×classes logits, got {tuple(logits.shape)}"
        )
    return logits


def perturbation_norms(x_adv: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """L∞, L2 and L0 (pixels changed by more than 1e-8, counted per element) of x_adv − x."""
    d = (x_adv - x).flatten(1)
    return {
        "linf": d.abs().amax(1),
        "l2": d.norm(dim=1),
        "l0": (d.abs() > 1e-8).sum(1).to(torch.float32),
    }


def outcome(
    model: nn.Module, images: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(predicted class, max softmax, full softmax) of the model on `images`."""
    probs = predict_logits(model, images, batch_size).softmax(1)
    conf, pred = probs.max(1)
    return pred, conf, probs
