"""ODIN — Liang, Li & Srikant, "Enhancing the Reliability of Out-of-distribution Image Detection in
Neural Networks" (ICLR 2018): temperature scaling plus a small input perturbation.

    S(x; T)_c = softmax(f(x) / T)_c,          ŷ = argmax_c f_c(x)
    x̃ = clip₀¹( x − ε · sign(−∇ₓ log S(x; T)_ŷ) )
    s(x) = 1 − max_c S(x̃; T)_c                (higher = more anomalous)

T = 1000 as in the paper. The perturbation is taken on the [0, 1] images the model receives (the
model's own normalisation layer is inside the gradient), so ε is in [0, 1] pixel units; the
original code divided the gradient by the normalisation std instead.

ε is chosen at `fit` from a grid, **never on test anomalies**:

* ``selection="validation"`` (default): the ε with the best mean AUROC between held-out ID images
  and validation anomalies — the ``anomalies`` given to `fit` if any (e.g. FGSM of training
  images or an auxiliary outlier set), else synthetic proxies made from ID images
  (`tripwire.detectors.proxies`);
* ``selection="id-only"``: the ε maximising the mean max-softmax of ID images alone, as Hsu et al.
  (Generalized ODIN, CVPR 2020) suggest;
* a fixed ``epsilon`` skips the search.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from tripwire.batching import in_batches
from tripwire.data.base import ImageSet
from tripwire.detectors._baselines import EPSILON_GRID, choose_epsilon, validation_sets
from tripwire.detectors.base import Detector
from tripwire.detectors.msp import max_softmax
from tripwire.detectors.params import Grid, NonNegative, Positive
from tripwire.detectors.registry import register_detector
from tripwire.detectors.state import learned
from tripwire.features import model_device

Selection = Literal["validation", "id-only"]


def odin_perturb(
    model: nn.Module, x: torch.Tensor, temperature: float, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̃, ŷ): ODIN's perturbed images and the predicted classes of the clean images.

    Runs with gradients enabled whatever the caller's grad mode; the model's parameters get no
    ``.grad`` (only the input's gradient is taken).
    """
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        logits = model(xg)
        pred = logits.argmax(dim=1)
        if epsilon == 0:
            return x, pred
        log_s = torch.log_softmax(logits / temperature, dim=1).gather(1, pred[:, None]).sum()
        (grad,) = torch.autograd.grad(log_s, xg)
    return (x + epsilon * grad.sign()).clamp(0.0, 1.0).detach(), pred


def odin_score(
    model: nn.Module, x: torch.Tensor, temperature: float, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 − max softmax(f(x̃)/T), ŷ) for a batch; see the module docstring."""
    if epsilon == 0:
        with torch.no_grad():
            logits = model(x)
        return 1.0 - max_softmax(logits, temperature), logits.argmax(dim=1)
    x_tilde, pred = odin_perturb(model, x, temperature, epsilon)
    with torch.no_grad():
        logits = model(x_tilde)
    return 1.0 - max_softmax(logits, temperature), pred


@register_detector
class ODINDetector(Detector):
    """Temperature-scaled max softmax of a perturbed input (Liang et al. 2018).

    Args:
        temperature: T (paper: 1000).
        epsilon: a fixed perturbation ε, or None to choose it at `fit` from `epsilons`.
        epsilons: the grid (default: Liang et al.'s, in [0, 1] pixel units).
        selection: ``"validation"`` or ``"id-only"`` (see the module docstring).
        validation_size: ID images (and anomalies) used to choose ε.
        seed: seed of the validation draw and proxies.

    Examples:
        >>> det = ODINDetector().fit(model, mnist_train)               # doctest: +SKIP
        >>> det.epsilon_, det.score(model, x)                          # doctest: +SKIP
    """

    name = "odin"
    needs_gradients = True
    export_refusal = "it moves each input along the gradient of its score, autograd at scoring time"

    def reads_layers(self) -> bool:
        return False

    temperature: Positive = 1000.0
    epsilon: NonNegative | None = None
    epsilons: Grid = EPSILON_GRID
    selection: Selection = "validation"
    validation_size: Annotated[int, Field(ge=2)] = 1000
    seed: int = 0

    epsilon_: float = learned()
    criterion_: dict[str, float] = learned()

    def _fit(self, model: nn.Module, data: ImageSet, anomalies: ImageSet | None) -> None:
        self.criterion_: dict[str, float] = {}
        if self.epsilon is not None:
            self.epsilon_ = float(self.epsilon)
            return
        id_x, sets = validation_sets(data, anomalies, self.validation_size, self.seed)
        device = model_device(model)

        def score(x: torch.Tensor, eps: float) -> torch.Tensor:
            return in_batches(
                lambda b: odin_score(model, b.to(device), self.temperature, eps)[0], x
            )

        if self.selection == "validation":
            self.epsilon_, self.criterion_ = choose_epsilon(score, id_x, sets, self.epsilons)
        else:  # id-only: the ε giving ID inputs the highest mean max-softmax (lowest mean score)
            self.criterion_ = {
                repr(float(e)): float(1.0 - score(id_x, e).mean()) for e in sorted(self.epsilons)
            }
            best = max(self.criterion_.values())
            self.epsilon_ = next(float(e) for e, v in self.criterion_.items() if v >= best)

    def _score_batch(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return odin_score(model, x, self.temperature, self.epsilon_)

    def fit_summary(self) -> dict[str, str]:
        """The input-step size ε that `fit` chose (``epsilon=None``); {} when it was given."""
        return {"epsilon": f"{self.epsilon_:g}"} if self.epsilon is None else {}
