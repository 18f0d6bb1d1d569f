"""Noise images: the paper's Gaussian N(0.5, 1) clipped to [0, 1] and uniform U[0, 1] sets."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from tripwire.anomalies.base import AnomalySet
from tripwire.anomalies.registry import register_generator
from tripwire.anomalies.sourcefree import SourceFree


class _Noise(SourceFree):
    def _draw(self, n: int, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def generate(
        self,
        model: nn.Module,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        *,
        seed: int = 0,
    ) -> AnomalySet:
        """`n` noise images of `shape` (or as many and as shaped as x); success is always True."""
        n, shape = self.resolve_size(x)
        gen = torch.Generator().manual_seed(int(seed))
        images = self._draw(n, shape, gen).clamp_(0.0, 1.0)
        return self.finish(model, images, seed, {**self.params, "n": n, "shape": list(shape)})


@register_generator
class GaussianNoise(_Noise):
    """Gaussian noise images: every pixel i.i.d. N(`mean`, `std`²), clipped to [0, 1].

    The uniform-framework paper (Zhao et al.) uses N(0.5, 1) clipped — so most pixels end up at
    0 or 1 — with 10,000 images.

    Examples:
        >>> s = make_anomalies("gaussian", model, n=100, shape=(1, 28, 28))  # doctest: +SKIP
    """

    name = "gaussian"
    description = "Gaussian noise N(0.5, 1) clipped to [0, 1]"
    defaults: ClassVar[dict[str, Any]] = {"mean": 0.5, "std": 1.0, "n": None, "shape": None}

    def _draw(self, n: int, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        return torch.randn((n, *shape), generator=gen) * self.params["std"] + self.params["mean"]


@register_generator
class UniformNoise(_Noise):
    """Uniform noise images: every pixel i.i.d. U[0, 1] (the paper's uniform noise set).

    Examples:
        >>> s = make_anomalies("uniform", model, n=100, shape=(1, 28, 28))  # doctest: +SKIP
    """

    name = "uniform"
    description = "Uniform noise U[0, 1]"
    defaults: ClassVar[dict[str, Any]] = {"n": None, "shape": None}

    def _draw(self, n: int, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        return torch.rand((n, *shape), generator=gen)
