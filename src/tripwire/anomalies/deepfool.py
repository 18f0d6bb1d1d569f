"""DeepFool — the minimal linearised L2 attack (Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from tripwire.anomalies.attack import Attack
from tripwire.anomalies.base import require_count, require_positive
from tripwire.anomalies.registry import register_generator


@register_generator
class DeepFool(Attack):
    """Multi-class DeepFool (Algorithm 2 of the paper), batched.

    At x_i, with k̂ the original class and K the `candidates` classes ranked highest on the clean
    input, w_k = ∇Z_k(x_i) − ∇Z_k̂(x_i) and f_k = Z_k(x_i) − Z_k̂(x_i); step to the nearest
    linearised boundary, r_i = (|f_l| + 1e-4)/‖w_l‖₂² · w_l with l = argmin_k |f_k|/‖w_k‖₂.
    The output is clip₀¹(x + (1 + overshoot) · Σ r_i); each input stops when misclassified or
    after `steps` iterations. Restricting to the top `candidates` classes (10, as the authors'
    code) keeps the cost at `candidates` backward passes for models with many classes.

    Written here: torchattacks' DeepFool computes a full Jacobian one image at a time; this runs the
    whole batch with one backward pass per candidate class.

    Examples:
        >>> s = get_generator("deepfool").generate(model, x, y, seed=0)  # doctest: +SKIP
    """

    name = "deepfool"
    description = "DeepFool, nearest linearised boundary (Moosavi-Dezfooli et al. 2016)"
    defaults: ClassVar[dict[str, Any]] = {"overshoot": 0.02, "steps": 50, "candidates": 10}

    def _validate(self) -> None:
        require_positive(self, "overshoot", allow_zero=True)
        require_count(self, "steps", "candidates")

    def _perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, extra: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        p = self.params
        dims = (-1,) + (1,) * (x.ndim - 1)
        with torch.no_grad():
            logits0 = model(x)
        k = min(int(p["candidates"]), logits0.shape[1])
        # candidate classes: the original class first, then the next k − 1 by clean logit
        order = logits0.argsort(1, descending=True)[:, :k]
        others = torch.stack([row[row != lab][: k - 1] for row, lab in zip(order, y, strict=True)])
        r_tot = torch.zeros_like(x)
        x_adv = x.clone()
        active = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for _ in range(p["steps"]):
            ia = torch.nonzero(active).flatten()
            if len(ia) == 0:
                break
            xa = x_adv[ia].detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(xa)
                z0 = logits.gather(1, y[ia, None]).squeeze(1)
                (g0,) = torch.autograd.grad(z0.sum(), xa, retain_graph=True)
                best = torch.full((len(ia),), float("inf"), device=x.device)
                step = torch.zeros_like(xa)
                for j in range(others.shape[1]):
                    zk = logits.gather(1, others[ia, j, None]).squeeze(1)
                    (gk,) = torch.autograd.grad(zk.sum(), xa, retain_graph=j < others.shape[1] - 1)
                    w = gk - g0
                    f = (zk - z0).detach()
                    wn = w.flatten(1).norm(dim=1).clamp_min(1e-12)
                    dist = f.abs() / wn
                    better = dist < best
                    best = torch.where(better, dist, best)
                    r = ((f.abs() + 1e-4) / wn.pow(2)).view(dims) * w
                    step[better] = r[better]
            still = logits.detach().argmax(1) == y[ia]
            active[ia[~still]] = False
            ia, step = ia[still], step[still]
            r_tot[ia] += step
            x_adv[ia] = (x[ia] + (1 + p["overshoot"]) * r_tot[ia]).clamp(0.0, 1.0)
        return x_adv
