"""Adaptive attacks: PGD against a classifier and its calibrated detector together.

Carlini & Wagner ("Adversarial examples are not easily detected", 2017) and Tramèr et al. ("On
adaptive attacks to adversarial example defenses", NeurIPS 2020) bypassed published detectors
by attacking the classifier and the detector at once. Here an input x of label y is broken by
x' in the ε-ball around x when the model misclassifies x' **and** the detector does not flag it:

    success(x') = [ŷ(x') ≠ y] ∧ [s(x') ≤ τ_ŷ(x')],      ŷ = argmax f, τ the per-class thresholds.

Projected steepest ascent from a seeded random start (PGD, Madry et al. 2018) on Tramèr et al.'s
*selective* loss — per input, the one constraint it does not meet yet:

    L(x') = CE(f(x'), y)                while ŷ(x') = y,
    L(x') = −(s(x') − τ_ŷ(x'))           once misclassified but flagged,

and an input is kept at its first success. A PGD run of T steps is the first T steps of a longer
run (same start, same steps), so the success after each step is that of the attack with that
many steps (`AdaptiveResult.success_after`). With ``against_detector=False`` the loss is CE
alone: the *oblivious* attacker of the other benchmarks, judged by the same success rule.

The detector's gradient is taken through its own scoring path (`Detector._score_batch` under
autograd), so this is the *white-box* attacker: the exact fitted detector, its state and its
thresholds. Detectors whose score carries no gradient to the input (those that take input
gradients themselves, or score outside torch) raise `NotDifferentiableError`; attacking them
needs BPDA, which is not built yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from tripwire.anomalies.attack import STEEPEST, Norm
from tripwire.anomalies.base import check_labels, model_guard
from tripwire.anomalies.pgd import PGDL2, PGDLinf
from tripwire.batching import batch_slices
from tripwire.data.base import check_images
from tripwire.detectors.base import Detector
from tripwire.errors import InvalidInputError, NotFittedError, TripwireError
from tripwire.features import model_device
from tripwire.model_output import outputs_of, require_logits
from tripwire.progress import track


class NotDifferentiableError(TripwireError):
    """The detector's score carries no gradient to the input, so a gradient attack on it needs
    another way round (BPDA)."""


@dataclass(frozen=True)
class AdaptiveResult:
    """What an adaptive attack reached, per attacked input (N = the inputs given).

    `images` are the adversarial inputs (at the first success, else after the last step);
    `misclassified` and `flagged` describe them; `success` = misclassified and not flagged;
    `first_success` is the step (1-based) at which each input first succeeded, 0 if never.
    """

    images: torch.Tensor
    misclassified: torch.Tensor
    flagged: torch.Tensor
    success: torch.Tensor
    first_success: torch.Tensor

    def success_after(self, steps: int) -> float:
        """Share of inputs broken within the first `steps` steps (the attack with that many)."""
        reached = (self.first_success > 0) & (self.first_success <= steps)
        return float(reached.double().mean())


def adaptive_pgd(
    model: nn.Module,
    detector: Detector,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: Norm = "linf",
    eps: float,
    step: float,
    steps: int,
    against_detector: bool = True,
    seed: int = 0,
    batch_size: int = 256,
) -> AdaptiveResult:
    """Attack `model` guarded by the calibrated `detector` on inputs `x` with labels `y`.

    Args:
        norm: the threat model, ``"linf"`` or ``"l2"``.
        eps, step, steps: radius of the ball, step size and number of steps.
        against_detector: False for the oblivious attacker (cross-entropy only).
        seed: seed of the random start (drawn once for all inputs: batch-size independent).

    Raises:
        NotFittedError: the detector has no thresholds.
        NotDifferentiableError: the detector's score has no gradient to the input.
        InvalidInputError: bad images or labels, or a non-positive eps, step or steps.
    """
    detector.check_fitted()
    if detector.thresholds_ is None:
        raise NotFittedError("the detector has no thresholds: call calibrate(model, id_val)")
    if eps <= 0 or step <= 0 or steps < 1:
        raise InvalidInputError(f"eps, step must be > 0 and steps ≥ 1: {eps}, {step}, {steps}")
    x = check_images(x, detector.input_shape_, what="x").float()
    y = check_labels(y, len(x), "adaptive-pgd")
    # PGD's own random start: uniform in the L∞ cube, or uniform direction and radius ≤ ε (L2)
    pgd = {"linf": PGDLinf, "l2": PGDL2}[norm](eps=eps, step=step, steps=steps)
    start = pgd._draw(x, y, 0, torch.Generator().manual_seed(int(seed)))["start"]
    device = model_device(model)
    thresholds = detector.thresholds_.to(device)
    parts = []
    with model_guard(model):
        for s in track(batch_slices(len(x), batch_size), "adaptive PGD"):
            xb, yb, sb = x[s].to(device), y[s].to(device), start[s].to(device)
            parts.append(
                _attack_batch(
                    model,
                    detector,
                    thresholds,
                    xb,
                    yb,
                    sb,
                    norm=norm,
                    eps=eps,
                    step=step,
                    steps=steps,
                    against_detector=against_detector,
                )
            )
    images, mis, flagged, first = (torch.cat(column) for column in zip(*parts, strict=True))
    return AdaptiveResult(images, mis, flagged, mis & ~flagged, first)


def _attack_batch(
    model: nn.Module,
    detector: Detector,
    thresholds: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    start: torch.Tensor,
    *,
    norm: Norm,
    eps: float,
    step: float,
    steps: int,
    against_detector: bool,
) -> tuple[torch.Tensor, ...]:
    direction, project = STEEPEST[norm]
    x_adv = project(x + start, x, eps)
    best = x_adv.clone()
    first = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for t in range(steps + 1):
        active = torch.nonzero(first == 0).flatten()
        if len(active) == 0:
            break
        xa = x_adv[active].detach().requires_grad_(True)
        with torch.enable_grad():
            scores, logits = _scored(model, detector, xa)
            pred = logits.argmax(dim=1)
            margin = scores - thresholds[pred]
            mis = pred != y[active]
            done = mis & (margin <= 0)
            if t > 0:  # the random start itself is not an attack step
                first[active[done]] = t
                best[active[done]] = xa[done].detach()
            if t == steps:
                break
            ce = F.cross_entropy(logits, y[active], reduction="none")
            loss = torch.where(mis & torch.tensor(against_detector), -margin, ce)
            (grad,) = torch.autograd.grad(loss.sum(), xa)
        keep = ~done
        moved = project(xa.detach()[keep] + step * direction(grad[keep]), x[active[keep]], eps)
        x_adv[active[keep]] = moved
    still = first == 0
    best[still] = x_adv[still].detach()
    with torch.no_grad():
        scores, logits = _scored(model, detector, best)
        pred = logits.argmax(dim=1)
        flagged = scores > thresholds[pred]
    return best.cpu(), (pred != y).cpu(), flagged.cpu(), first.cpu()


def _scored(
    model: nn.Module, detector: Detector, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, logits) of a batch, both differentiable in x where grad is enabled."""
    with outputs_of(model) as outputs:
        scores, _ = detector._score_batch(model, x)
    # a detector that ran the model once gave its logits; others (perturbed inputs) need a pass
    logits = require_logits(outputs[0] if len(outputs) == 1 else model(x))
    if torch.is_grad_enabled() and not scores.requires_grad:
        raise NotDifferentiableError(
            f"{detector.name}: its score carries no gradient to the input (it takes input "
            "gradients itself or scores outside torch); an adaptive attack on it needs BPDA"
        )
    return scores, logits
