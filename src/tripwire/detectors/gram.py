"""Gram-matrix deviations — Sastry & Oore, "Detecting Out-of-Distribution Examples with Gram
Matrices" (ICML 2020). For a layer ℓ with feature maps F ∈ R^{C×HW} and an order p:

    G_ℓ^p(x)  = the row sums of (F^p)(F^p)ᵀ, signed p-th root: sign(g)·|g|^{1/p}   (C values;
                F^p element-wise)
    [m, M]    = the per-entry minimum and maximum of G_ℓ^p over the ID fit images of class c
    δ(g)      = (m − g)/|m| if g < m;  (g − M)/|M| if g > M;  0 otherwise
    δ_ℓ(x)    = Σ_p Σ_entries δ(G_ℓ^p(x))   with the bounds of the predicted class ŷ(x)
    s(x)      = Σ_ℓ δ_ℓ(x) / E[δ_ℓ]         (E over held-out ID fit images; higher = more
                                            anomalous)

Orders p = 1…10 as in the paper; by default every activation layer of the model (the paper
monitors the outputs of all layers); ``layers="deepest"`` keeps those whose maps have the
fewest positions (the last stage of a CNN: the cheapest to monitor); ``layers=[...]`` names
others. The bounds come from the
labelled classes of (1 − `holdout_fraction`) of the fit images (their predicted classes where
unlabelled), E[δ_ℓ] from the rest (the paper takes it on ID validation data); inputs are scored
against the bounds of their predicted class. Computed in float64: F^10 overflows float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import nn

from tripwire.data.base import ImageSet
from tripwire.detectors.base import Detector
from tripwire.detectors.params import Names, OpenFraction, PositiveInt
from tripwire.detectors.registry import register_detector
from tripwire.detectors.state import learned
from tripwire.errors import InvalidInputError, ModelMismatchError
from tripwire.features import (
    eval_mode,
    gram_row_sums,
    is_activation,
    list_layers,
    model_device,
    output_shapes,
)


def gram_statistics(maps: torch.Tensor, orders: Sequence[int]) -> torch.Tensor:
    """G^p of feature maps N×C×… for each order p: N × len(orders) × C, float64.

    The row sums of A·Aᵀ are A·(Aᵀ·1): each channel's map dotted with the sum of all channels'
    maps, C·HW operations instead of the Gram matrix's C²·HW. Consecutive orders are reached by
    one multiplication each instead of a power.
    """
    f = maps.detach().double().flatten(2)  # N×C×HW
    out = []
    power, fp = 1, f
    for p in orders:
        fp = f if p == 1 else fp * f if p == power + 1 else f.pow(p)
        power = p
        g = gram_row_sums(fp)
        out.append(g.sign() * g.abs().pow(1.0 / p))
    return torch.stack(out, dim=1)


def deviation(g: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Σ over all entries but the first (batch) axis of the relative excursions of `g` beyond
    [low, high] (Sastry & Oore's δ; 1e-6 keeps a zero bound finite, as in pytorch-ood)."""
    below = (low - g).clamp_min(0) / (low.abs() + 1e-6)
    above = (g - high).clamp_min(0) / (high.abs() + 1e-6)
    return (below + above).flatten(1).sum(dim=1)


class GramTap:
    """Forward hooks reducing named layers' outputs to their Gram statistics inside the hook, so
    that no feature map outlives its layer's forward."""

    def __init__(self, model: nn.Module, layers: Sequence[str], orders: Sequence[int]) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in layers if n not in modules or not n]
        if missing:
            raise InvalidInputError(
                f"unknown layer(s) {missing}; available: {', '.join(list_layers(model))}"
            )
        self.modules = [modules[n] for n in layers]
        self.layers, self.orders = list(layers), list(orders)
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str):  # type: ignore[no-untyped-def]
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            out = output[0] if isinstance(output, tuple | list) else output
            assert isinstance(out, torch.Tensor)
            if out.ndim < 3:
                raise InvalidInputError(
                    f"layer {name!r} gives {out.ndim}-D outputs; Gram matrices need feature "
                    "maps N×C×H×W (or N×C×L)"
                )
            self.outputs[name] = gram_statistics(out, self.orders)

        return hook

    def __enter__(self) -> GramTap:
        for name, module in zip(self.layers, self.modules, strict=True):
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def forward(self, model: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(Gram statistics per layer, logits) of one batch."""
        self.outputs.clear()
        logits = model(x)
        return [self.outputs[n] for n in self.layers], logits


def gram_layers(
    model: nn.Module, sample: torch.Tensor, layers: Sequence[str] | str | None
) -> list[str]:
    """The layers a Gram view monitors: `layers` when they are names; None: every activation
    layer (`tripwire.features.is_activation`) whose output is a feature map; ``"deepest"``: those
    of them whose maps have the fewest positions (found by one forward of `sample`)."""
    if not isinstance(layers, str) and layers is not None:
        return list(layers)
    modules = dict(model.named_modules())
    candidates = [n for n in list_layers(model) if is_activation(modules[n])]
    ran = output_shapes(model, sample, candidates)
    shapes = {n: calls[0] for n, calls in ran.items()}
    chosen = [n for n in candidates if n in shapes and len(shapes[n]) >= 3]
    if not chosen:
        raise InvalidInputError(
            "the model has no activation layer with feature maps; name layers with "
            f"layers=[...] from: {', '.join(list_layers(model))}"
        )
    if layers == "deepest":
        positions = {n: math.prod(shapes[n][2:]) for n in chosen}
        fewest = min(positions.values())
        chosen = [n for n in chosen if positions[n] == fewest]
    return chosen


@dataclass
class GramBounds:
    """What a Gram view learns: per layer ℓ the class-wise bounds [m, M] of its statistics
    (K × orders × C, float64) and E[δ_ℓ], the mean deviation of held-out ID inputs. Without
    layers, every input deviates by 0."""

    low: list[torch.Tensor]
    high: list[torch.Tensor]
    expected: torch.Tensor

    @classmethod
    def fit(
        cls,
        stats: Sequence[torch.Tensor],
        classes: torch.Tensor,
        held_stats: Sequence[torch.Tensor],
        held_classes: torch.Tensor,
        num_classes: int,
    ) -> GramBounds:
        """Bounds from the statistics (per layer N × orders × C) of the ID fit images of each
        class (a class without any takes the range over all of them), E[δ_ℓ] from the held-out
        ones'."""
        present = torch.bincount(classes, minlength=num_classes) > 0
        lows, highs = [], []
        for s in stats:
            s = s.double()
            low = torch.full((num_classes, *s.shape[1:]), float("inf"), dtype=torch.float64)
            high = torch.full_like(low, float("-inf"))
            index = classes[:, None, None].expand_as(s)
            low.scatter_reduce_(0, index, s, "amin")
            high.scatter_reduce_(0, index, s, "amax")
            low[~present], high[~present] = s.amin(0), s.amax(0)
            lows.append(low)
            highs.append(high)
        bounds = cls(lows, highs, torch.ones(len(lows), dtype=torch.float64))
        expected = bounds.deviations(held_stats, held_classes).mean(dim=0)
        bounds.expected = torch.where(expected > 0, expected, torch.ones_like(expected))
        return bounds

    def deviations(self, stats: Sequence[torch.Tensor], classes: torch.Tensor) -> torch.Tensor:
        """δ_ℓ per input and layer against the bounds of `classes`: N × L."""
        if not self.low:
            return torch.zeros(len(classes), 0, dtype=torch.float64, device=classes.device)
        for s, low in zip(stats, self.low, strict=True):
            if s.shape[1:] != low.shape[1:]:
                raise ModelMismatchError(
                    f"Gram statistics of shape {tuple(s.shape[1:])}; the detector was fitted on "
                    f"{tuple(low.shape[1:])}"
                )
        return torch.stack(
            [
                deviation(s, low.to(s.device)[classes], high.to(s.device)[classes])
                for s, low, high in zip(stats, self.low, self.high, strict=True)
            ],
            dim=1,
        )

    def score(self, stats: Sequence[torch.Tensor], classes: torch.Tensor) -> torch.Tensor:
        """s = Σ_ℓ δ_ℓ / E[δ_ℓ] against the bounds of `classes` (float64)."""
        deviations = self.deviations(stats, classes)
        return (deviations / self.expected.to(deviations.device)).sum(dim=1)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The state to store (`tripwire.detectors.state`): E[δ] and each layer's bounds."""
        out = {"expected": self.expected}
        for i, (low, high) in enumerate(zip(self.low, self.high, strict=True)):
            out[f"low.{i}"], out[f"high.{i}"] = low, high
        return out, {}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> GramBounds:
        """Inverse of `state`; ValueError where the parts do not fit one another."""
        expected = tensors["expected"]
        n_layers = len(expected)
        if expected.ndim != 1 or not bool((expected > 0).all()):
            raise ValueError("expected deviations must be positive, one per layer")
        low = [tensors[f"low.{i}"] for i in range(n_layers)]
        high = [tensors[f"high.{i}"] for i in range(n_layers)]
        for lo, hi in zip(low, high, strict=True):
            if lo.shape != hi.shape or lo.ndim != 3 or lo.shape[:2] != low[0].shape[:2]:
                raise ValueError(f"bounds of shape {tuple(lo.shape)} do not fit")
            if lo.dtype != torch.float64 or hi.dtype != torch.float64:
                raise ValueError("bounds must be float64")
            if not bool(torch.isfinite(lo).all() and torch.isfinite(hi).all()):
                raise ValueError("bounds have non-finite entries")
        return cls(low, high, expected)

    def check_fits(self, n_layers: int, num_classes: int, n_orders: int) -> None:
        """ValueError unless the bounds are of `n_layers` layers, `num_classes` classes and
        `n_orders` orders."""
        shapes = {tuple(lo.shape[:2]) for lo in self.low}
        if len(self.low) != n_layers or shapes - {(num_classes, n_orders)}:
            raise ValueError(
                f"bounds for {len(self.low)} layers of (classes, orders) {sorted(shapes)}; "
                f"expected {n_layers} layers of ({num_classes}, {n_orders})"
            )


@register_detector
class GramDetector(Detector):
    """Deviations of the layers' Gram-matrix statistics from their ID class-wise ranges.

    Args:
        layers: layer names; None: every activation layer (`tripwire.features.is_activation`)
            whose output is a feature map; ``"deepest"``: those of them whose maps have the
            fewest positions.
        orders: the orders p (paper: 1…10).
        holdout_fraction: share of the fit images that set E[δ_ℓ] instead of the bounds.
        seed: seed of that split.

    Examples:
        >>> det = GramDetector().fit(model, train).calibrate(model, val)   # doctest: +SKIP
    """

    name = "gram"

    layers: Names | Literal["deepest"] | None = None
    orders: Annotated[Sequence[PositiveInt], Field(min_length=1)] | None = None
    holdout_fraction: OpenFraction = 0.1
    seed: int = 0

    layers_: list[str] = learned()
    bounds_: GramBounds = learned(stored_as="")

    def _orders(self) -> list[int]:
        return list(range(1, 11)) if self.orders is None else list(self.orders)

    def _check_params(self) -> None:
        if isinstance(self.layers, list | tuple) and len(set(self.layers)) < len(self.layers):
            raise ValueError(f"layers must be distinct names, got {self.layers!r}")

    def _statistics(
        self, model: nn.Module, data: ImageSet
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        device = model_device(model)
        per_layer: list[list[torch.Tensor]] = [[] for _ in self.layers_]
        logits = []
        with eval_mode(model), torch.no_grad(), GramTap(model, self.layers_, self._orders()) as tap:
            for x in data.batches(256):
                stats, out = tap.forward(model, x.to(device))
                for store, s in zip(per_layer, stats, strict=True):
                    store.append(s.cpu())
                logits.append(out.cpu())
        return [torch.cat(s) for s in per_layer], torch.cat(logits)

    def _fit(self, model: nn.Module, data: ImageSet, anomalies: ImageSet | None) -> None:
        sample = data.as_float(slice(0, 2)).to(model_device(model))
        self.layers_ = gram_layers(model, sample, self.layers)
        bounds_set, norm_set = data.split(self.holdout_fraction, seed=self.seed)
        stats, logits = self._statistics(model, bounds_set)
        held, held_logits = self._statistics(model, norm_set)
        self.bounds_ = GramBounds.fit(
            stats,
            logits.argmax(1) if bounds_set.labels is None else bounds_set.labels,
            held,
            held_logits.argmax(1) if norm_set.labels is None else norm_set.labels,
            self.num_classes_,
        )

    def _score_batch(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with GramTap(model, self.layers_, self._orders()) as tap:
            stats, logits = tap.forward(model, x)
        predicted = logits.argmax(dim=1)
        return self.bounds_.score(stats, predicted), predicted

    def fit_summary(self) -> dict[str, str]:
        return {"layers": f"{len(self.layers_)} layers"}

    def _check_state(self) -> None:
        self.bounds_.check_fits(len(self.layers_), self.num_classes_, len(self._orders()))
