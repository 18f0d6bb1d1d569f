"""CW-L2 — the Carlini & Wagner L2 attack (IEEE S&P 2017), batched, with binary search over c."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from tripwire.anomalies.attack import Attack
from tripwire.anomalies.base import require_count, require_positive
from tripwire.anomalies.registry import register_generator

_BIG = 1e10


@register_generator
class CWL2(Attack):
    """Carlini–Wagner L2 (untargeted), minimising per input over w

        ‖x'(w) − x‖₂² + c · max(Z(x')_y − max_{j≠y} Z(x')_j, −κ),   x'(w) = (tanh(w) + 1)/2

    with Adam (`lr`, `steps` per search step), keeping the smallest-L2 misclassified x' seen, and a
    per-input binary search over c (`binary_steps` rounds from `c_init`: c halves towards the
    last failure after a success, grows ×10 while no success has been seen). κ = `confidence`.

    Written here rather than wrapped: torchattacks' CW has no binary search and its defaults
    (c = 1, 100 steps) reach only ~33 % success on an MNIST LeNet; ART's is per-image and slow. This
    one runs the whole batch at once (Adam is element-wise, so inputs stay independent). Defaults
    c = 10, lr = 0.1 reach ≈ 100 % on MNIST. The image is x + x'(w) − x'(w₀) with w₀ = atanh(2x−1),
    so it starts exactly at x and untouched pixels stay exactly unchanged (L0 is meaningful).

    Examples:
        >>> s = get_generator("cw-l2", steps=100).generate(model, x, y, seed=0)  # doctest: +SKIP
    """

    name = "cw-l2"
    description = "Carlini-Wagner L2 with binary search over c (Carlini & Wagner 2017)"
    defaults: ClassVar[dict[str, Any]] = {
        "c_init": 10.0,
        "binary_steps": 5,
        "steps": 100,
        "lr": 0.1,
        "confidence": 0.0,
    }

    def _validate(self) -> None:
        require_positive(self, "c_init", "lr")
        require_positive(self, "confidence", allow_zero=True)
        require_count(self, "binary_steps", "steps")

    def _perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, extra: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        p = self.params
        n = len(x)
        w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        base = (torch.tanh(w0) + 1) / 2
        onehot = torch.zeros(n, 0, device=x.device)
        c = torch.full((n,), float(p["c_init"]), device=x.device)
        lower = torch.zeros(n, device=x.device)
        upper = torch.full((n,), _BIG, device=x.device)
        best_l2 = torch.full((n,), float("inf"), device=x.device)
        best_adv = x.clone()
        last = x.clone()
        for _ in range(p["binary_steps"]):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=p["lr"])
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            for _ in range(p["steps"]):
                with torch.enable_grad():
                    x_adv = (x + (torch.tanh(w) + 1) / 2 - base).clamp(0.0, 1.0)
                    logits = model(x_adv)
                    if onehot.shape[1] != logits.shape[1]:
                        onehot = torch.nn.functional.one_hot(y, logits.shape[1]).bool()
                    real = logits[onehot]
                    other = logits.masked_fill(onehot, -float("inf")).amax(1)
                    margin = real - other
                    l2 = (x_adv - x).flatten(1).pow(2).sum(1)
                    loss = (l2 + c * (margin + p["confidence"]).clamp_min(0.0)).sum()
                    opt.zero_grad()
                    loss.backward()
                with torch.no_grad():
                    ok = (margin.detach() < -p["confidence"]) & (logits.argmax(1) != y)
                    better = ok & (l2.detach() < best_l2)
                    best_l2 = torch.where(better, l2.detach(), best_l2)
                    best_adv[better] = x_adv.detach()[better]
                    found |= ok
                opt.step()
            with torch.no_grad():
                last = (x + (torch.tanh(w) + 1) / 2 - base).clamp(0.0, 1.0)
                upper = torch.where(found, torch.minimum(upper, c), upper)
                lower = torch.where(found, lower, torch.maximum(lower, c))
                bounded = upper < _BIG / 10
                c = torch.where(bounded, (lower + upper) / 2, c * 10)
        never = torch.isinf(best_l2)
        best_adv[never] = last[never]
        return best_adv.detach()
