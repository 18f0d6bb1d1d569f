"""PGD — projected gradient descent with a random start (Madry et al., ICLR 2018), in the L∞ and
L2 threat models."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from tripwire.anomalies.attack import STEEPEST, Attack, Norm, iterative_ascent
from tripwire.anomalies.base import require_count, require_positive
from tripwire.anomalies.registry import register_generator


class _PGD(Attack):
    """Steepest ascent in the ε-ball of `norm` from a seeded random start (`_draw`)."""

    norm: ClassVar[Norm]

    def _validate(self) -> None:
        require_positive(self, "eps", "step")
        require_count(self, "steps")

    def _perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, extra: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        p = self.params
        _, project = STEEPEST[self.norm]
        return iterative_ascent(
            model,
            x,
            y,
            project(x + extra["start"], x, p["eps"]),
            norm=self.norm,
            eps=p["eps"],
            step=p["step"],
            steps=p["steps"],
            early_stop=False,
        )


@register_generator
class PGDLinf(_PGD):
    """PGD-L∞: x_0 = clip₀¹(x + U[−ε, ε]) (if `random_start`), then
    x_{t+1} = clip_{x,ε}(x_t + α · sign(∇ₓ CE(f(x_t), y))) for `steps` steps.

    Defaults are Madry et al.'s MNIST setting: ε = 0.3, α = 0.01, 40 steps. Written here rather than
    wrapped from torchattacks because its random start draws from torch's global RNG; ours comes
    from the seeded generator, drawn once for all inputs (batch-size independent).

    Examples:
        >>> s = get_generator("pgd-linf", eps=0.3).generate(model, x, y, seed=0)  # doctest: +SKIP
    """

    name = "pgd-linf"
    norm = "linf"
    description = "Projected gradient descent in the L∞ ball, random start (Madry et al. 2018)"
    defaults: ClassVar[dict[str, Any]] = {
        "eps": 0.3,
        "step": 0.01,
        "steps": 40,
        "random_start": True,
    }

    def _draw(
        self, x: torch.Tensor, y: torch.Tensor, num_classes: int, gen: torch.Generator
    ) -> dict[str, torch.Tensor]:
        eps = self.params["eps"]
        noise = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
        return {"start": noise if self.params["random_start"] else torch.zeros_like(x)}


@register_generator
class PGDL2(_PGD):
    """PGD-L2: x_0 = x + δ with δ uniform in direction and radius ≤ ε (if `random_start`), then
    x_{t+1} = Π_{‖·−x‖₂≤ε}(x_t + α · g/‖g‖₂), g = ∇ₓ CE(f(x_t), y), clipped to [0, 1].

    Defaults: ε = 3.0, α = 0.2, 40 steps — MNIST's usual L2 budget for undefended models
    (clean LeNets need a mean L2 of about 1.3–1.7 to flip, so ε = 2 leaves some inputs unbroken).
    Written here for the same reason as PGD-L∞ (seeded random start).

    Examples:
        >>> s = get_generator("pgd-l2", eps=2.0).generate(model, x, y, seed=0)  # doctest: +SKIP
    """

    name = "pgd-l2"
    norm = "l2"
    description = "Projected gradient descent in the L2 ball, random start (Madry et al. 2018)"
    defaults: ClassVar[dict[str, Any]] = {
        "eps": 3.0,
        "step": 0.2,
        "steps": 40,
        "random_start": True,
    }

    def _draw(
        self, x: torch.Tensor, y: torch.Tensor, num_classes: int, gen: torch.Generator
    ) -> dict[str, torch.Tensor]:
        if not self.params["random_start"]:
            return {"start": torch.zeros_like(x)}
        d = torch.randn(x.shape, generator=gen)
        d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        r = torch.rand(len(x), generator=gen).view(-1, 1, 1, 1)
        return {"start": d * r * self.params["eps"]}
