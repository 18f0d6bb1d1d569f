"""What every white-box attack shares: filter to correctly classified inputs, draw the seeded
randomness up front, perturb batch by batch on the model's device, and record the outcome.

A subclass implements `_perturb(model, x, y, extra)` for one batch (and `_draw` if it needs
randomness: drawn once for all inputs from a `torch.Generator`, so the result does not depend on
the batch size and no global random state is touched).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from tripwire.anomalies.base import (
    AnomalySet,
    BaseGenerator,
    check_labels,
    model_device,
    model_guard,
    outcome,
    perturbation_norms,
    predict_logits,
)
from tripwire.batching import batch_slices
from tripwire.data.base import check_images
from tripwire.errors import InvalidInputError
from tripwire.models.digest import weights_digest
from tripwire.progress import track


class Attack(BaseGenerator):
    """Base class of the white-box attacks (untargeted unless `targeted`).

    Success means the model no longer predicts the true label — for targeted attacks too, as in
    the reference code of the paper's evaluation (Feinman et al., Ma et al.: accuracy on the
    adversarial set); how often the target itself was reached is `summary()["target_rate"]`.
    """

    targeted: ClassVar[bool] = False

    def generate(
        self, model: nn.Module, x: torch.Tensor | None, y: torch.Tensor | None, *, seed: int = 0
    ) -> AnomalySet:
        """Attack the inputs of `x` that `model` classifies correctly (labels `y`).

        Returns one entry per attacked input; `source_index` points into `x`.
        """
        if x is None:
            raise InvalidInputError(f"{self.name}: an attack needs inputs x and labels y")
        x = check_images(x, what="x").float()
        y = check_labels(y, len(x), self.name)
        device = model_device(model)
        with model_guard(model):
            logits = predict_logits(model, x, self.batch_size)
            num_classes = int(logits.shape[1])
            idx = torch.nonzero(logits.argmax(1) == y).flatten()
            if len(idx) == 0:
                raise InvalidInputError(
                    f"{self.name}: none of the {len(x)} inputs is classified correctly, and only "
                    "correctly classified inputs are attacked — are the model and labels right?"
                )
            xs, ys = x[idx], y[idx]
            gen = torch.Generator().manual_seed(int(seed))
            extra = self._draw(xs, ys, num_classes, gen) if len(idx) else {}
            advs = []
            slices = batch_slices(len(idx), self.batch_size)
            for s in track(slices, f"{self.name} attack"):
                kw = {k: v[s].to(device) for k, v in extra.items()}
                xa = self._perturb(model, xs[s].to(device), ys[s].to(device), kw)
                advs.append(xa.detach().clamp_(0.0, 1.0).cpu())
            x_adv = torch.cat(advs)
            pred, conf, _ = outcome(model, x_adv, self.batch_size)
        target = extra.get("target")
        success = pred != ys  # targeted attacks too: see AnomalySet.summary()["target_rate"]
        return AnomalySet(
            kind=self.name,
            images=x_adv,
            success=success,
            source_index=idx.to(torch.int64),
            labels=ys,
            predicted=pred,
            confidence=conf,
            norms=perturbation_norms(x_adv, xs),
            params=dict(self.params),
            seed=int(seed),
            target=target,
            model_digest=weights_digest(model),
        )

    def _draw(
        self, x: torch.Tensor, y: torch.Tensor, num_classes: int, gen: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Seeded per-input randomness (random starts, targets), one row per input."""
        return {}

    def _perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, extra: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The adversarial batch for inputs `x` of labels `y`; `extra` holds this batch's rows
        of what `_draw` drew (random starts, targets, …)."""
        raise NotImplementedError


def loss_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(∇ₓ cross-entropy summed over the batch, logits) — per-input gradients, batch-independent."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad, logits.detach()


Projection = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip x_adv into the L∞ ball of radius eps around x, then into [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Scale x_adv − x into the L2 ball of radius eps, then clip into [0, 1] (only shrinks it)."""
    d = x_adv - x
    norm = d.flatten(1).norm(dim=1).clamp_min(1e-12)
    scale = (eps / norm).clamp(max=1.0).view(-1, *([1] * (x.ndim - 1)))
    return (x + d * scale).clamp_(0.0, 1.0)


def l2_direction(grad: torch.Tensor) -> torch.Tensor:
    """g / ‖g‖₂ per input (the L2 steepest-ascent direction)."""
    norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    return grad / norm.view(-1, *[1] * (grad.ndim - 1))


Norm = Literal["linf", "l2"]
# per threat model: the steepest-ascent direction of a gradient and the projection on the ε-ball
STEEPEST: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Projection]] = {
    "linf": (torch.sign, project_linf),
    "l2": (l2_direction, project_l2),
}


def iterative_ascent(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    start: torch.Tensor,
    *,
    norm: Norm,
    eps: float,
    step: float,
    steps: int,
    early_stop: bool,
) -> torch.Tensor:
    """Iterated steepest ascent on the cross-entropy, projected on the ε-ball of `norm` around x.

    x_{t+1} = Π_{x,ε}(x_t + α · d(∇ₓ CE(f(x_t), y))), d = sign (L∞) or g/‖g‖₂ (L2). With
    `early_stop`, an input is frozen as soon as it is misclassified (BIM-a); otherwise every
    input takes all `steps` (BIM-b, PGD).
    """
    direction, project = STEEPEST[norm]
    x_adv = start.clone()
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for _ in range(steps):
        ia = torch.nonzero(active).flatten()
        if len(ia) == 0:
            break
        grad, logits = loss_gradient(model, x_adv[ia], y[ia])
        if early_stop:
            still = logits.argmax(1) == y[ia]
            active[ia[~still]] = False
            ia, grad = ia[still], grad[still]
        x_adv[ia] = project(x_adv[ia] + step * direction(grad), x[ia], eps)
    return x_adv
