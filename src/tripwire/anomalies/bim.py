"""BIM — the basic iterative method (Kurakin, Goodfellow & Bengio, ICLR-W 2017), in the two
variants of Feinman et al. (2017) that the uniform-framework paper evaluates: BIM-a stops each
input at its first misclassification ("at the decision boundary"), BIM-b takes a fixed number of
steps ("beyond the boundary")."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from tripwire.anomalies.attack import Attack, iterative_ascent
from tripwire.anomalies.base import require_count, require_positive
from tripwire.anomalies.registry import register_generator


class _BIM(Attack):
    """x_{t+1} = clip_{x,ε}(x_t + α · sign(∇ₓ CE(f(x_t), y))), x_0 = x.

    Written here (not torchattacks' BIM): torchattacks has no per-input early stop, which BIM-a
    needs; the loop is a few lines of torch, shared with PGD.
    """

    defaults: ClassVar[dict[str, Any]] = {"eps": 0.3, "step": 0.01, "steps": 50}
    early_stop = False

    def _validate(self) -> None:
        require_positive(self, "eps", "step")
        require_count(self, "steps")

    def _perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, extra: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        p = self.params
        return iterative_ascent(
            model,
            x,
            y,
            x,
            norm="linf",
            eps=p["eps"],
            step=p["step"],
            steps=p["steps"],
            early_stop=self.early_stop,
        )


@register_generator
class BIMA(_BIM):
    """BIM-a: iterate with step α = 0.01 inside the ε = 0.3 L∞ ball; each input stops at the
    first step where the model misclassifies it (at most `steps` = 50 steps, as in the LID/KD
    reference code).

    Examples:
        >>> s = get_generator("bim-a").generate(model, x, y, seed=0)  # doctest: +SKIP
    """

    name = "bim-a"
    description = "Basic iterative method, stop per input at first misclassification"
    early_stop = True


@register_generator
class BIMB(_BIM):
    """BIM-b: iterate with step α = 0.01 inside the ε = 0.3 L∞ ball for a fixed 50 steps, well
    past the first misclassification.

    Examples:
        >>> s = get_generator("bim-b").generate(model, x, y, seed=0)  # doctest: +SKIP
    """

    name = "bim-b"
    description = "Basic iterative method, fixed number of steps past the boundary"
