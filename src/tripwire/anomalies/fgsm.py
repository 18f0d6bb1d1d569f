"""FGSM — the fast gradient sign method (Goodfellow, Shlens & Szegedy, ICLR 2015)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from tripwire.anomalies.attack import Attack, loss_gradient
from tripwire.anomalies.base import require_positive
from tripwire.anomalies.registry import register_generator


@register_generator
class FGSM(Attack):
    """One signed-gradient step of size ε: x' = clip₀¹(x + ε · sign(∇ₓ CE(f(x), y))).

    L∞ attack, untargeted. Default ε = 0.3 (the paper's MNIST setting; the LID code used 0.4).
    Written here rather than wrapped from torchattacks: it is three lines of torch, and doing it
    ourselves keeps the gradient per input (summed loss, so batch-independent) and the model's
    mode/requires_grad handling in one place with the other attacks.

    Examples:
        >>> s = get_generator("fgsm", eps=0.3).generate(model, x, y, seed=0)  # doctest: +SKIP
    """

    name = "fgsm"
    description = "Fast gradient sign method, one L∞ step (Goodfellow et al. 2015)"
    defaults: ClassVar[dict[str, Any]] = {"eps": 0.3}

    def _validate(self) -> None:
        require_positive(self, "eps")

    def _perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, extra: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        grad, _ = loss_gradient(model, x, y)
        return (x + self.params["eps"] * grad.sign()).clamp_(0.0, 1.0)
