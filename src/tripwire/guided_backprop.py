"""Guided back-propagation (Springenberg et al., "Striving for Simplicity: The All Convolutional
Net", ICLR 2015 workshop, §3.4), the feature-response maps of Amirian et al. (2018).

Back-propagating the class score f^out to the input, every ReLU f_i^{l+1} = max(f_i^l, 0) lets
a gradient through only where its input was positive **and** the gradient arriving from above is
positive:

    R_i^l = (f_i^l > 0) · (R_i^{l+1} > 0) · R_i^{l+1},    R^{out} = ∂f^out/∂f^out = 1

(plain back-propagation keeps only the first factor, the "deconvnet" only the second). The rule
is applied with hooks on every `nn.ReLU` module: a forward hook registers a tensor hook on the
ReLU's output that clamps the incoming gradient at 0; autograd's own ReLU backward then applies
the (f > 0) mask. In-place ReLUs work the same way. ReLUs called as functions
(``F.relu(x)`` inside ``forward``) cannot be hooked, so they are detected while the model runs
and refused with an `InvalidInputError`, as are other activation modules (ELU, GELU, …), for
which the guided rule is not defined.

The model is left as it was: hooks removed, train/eval flags restored, no ``.grad`` on its
parameters (the input gradient comes from `torch.autograd.grad`).

Examples:
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> guided_backprop(net, torch.rand(5, 1, 2, 2)).shape
    torch.Size([5, 1, 2, 2])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from tripwire.errors import InvalidInputError
from tripwire.features import eval_mode

# Activation modules for which the guided rule is undefined (refused rather than silently wrong).
_OTHER_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ELU,
    nn.GELU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.SELU,
    nn.CELU,
    nn.SiLU,
    nn.Mish,
    nn.Softplus,
    nn.Hardswish,
    nn.Tanh,
    nn.Sigmoid,
    nn.ReLU6,
    nn.Hardtanh,
)

# Functional forms of ReLU-like non-linearities that escape module hooks.
_FUNCTIONAL_RELUS = {
    F.relu,
    F.relu_,
    torch.relu,
    torch.relu_,
    torch.Tensor.relu,
    torch.Tensor.relu_,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.gelu,
    F.silu,
    F.hardtanh,
    torch.tanh,
    torch.sigmoid,
    torch.Tensor.tanh,
    torch.Tensor.sigmoid,
}


class _FunctionalReluGuard(TorchFunctionMode):
    """Raises when a ReLU-like function runs outside an `nn.ReLU` module's forward."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0  # > 0 while inside an nn.ReLU forward

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if self.depth == 0 and func in _FUNCTIONAL_RELUS:
            name = getattr(func, "__qualname__", getattr(func, "__name__", str(func)))
            raise InvalidInputError(
                f"guided back-propagation needs every non-linearity to be an nn.ReLU module, but "
                f"the model calls {name} as a function in its forward; replace it by an "
                "nn.ReLU() sub-module"
            )
        return func(*args, **(kwargs or {}))


def check_guided_model(model: nn.Module) -> list[nn.ReLU]:
    """The model's `nn.ReLU` modules; raises InvalidInputError if guided backprop cannot apply.

    Refuses models with no `nn.ReLU` module or with other activation modules (ELU, GELU, Tanh, …).
    ReLUs called as functions are caught when the model runs (see `guided_backprop`).
    """
    others = sorted(
        {type(m).__name__ for m in model.modules() if isinstance(m, _OTHER_ACTIVATIONS)}
    )
    if others:
        raise InvalidInputError(
            f"guided back-propagation needs ReLU non-linearities as nn.ReLU modules; the model "
            f"has {', '.join(others)}, for which the guided rule is not defined"
        )
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise InvalidInputError(
            "guided back-propagation needs the model's ReLUs as nn.ReLU modules; this model has "
            "none (functional F.relu calls cannot be hooked): use nn.ReLU() sub-modules"
        )
    return relus


@contextlib.contextmanager
def _guided_hooks(relus: list[nn.ReLU], guard: _FunctionalReluGuard) -> Iterator[None]:
    """Forward hooks making every ReLU's backward the guided rule; removed on exit."""

    def pre_hook(_module: nn.Module, _inputs: Any) -> None:
        guard.depth += 1

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        guard.depth -= 1
        if output.requires_grad:
            output.register_hook(lambda g: g.clamp(min=0))

    handles = []
    try:
        for relu in relus:
            handles.append(relu.register_forward_pre_hook(pre_hook))
            handles.append(relu.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def guided_backprop_and_logits(
    model: nn.Module, x: torch.Tensor, target: int | torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Guided-backprop response maps R (same shape as x) and the logits (N×K, detached).

    Args:
        model: a classifier whose non-linearities are `nn.ReLU` modules; left untouched.
        x: images N×C×H×W (on the model's device).
        target: the class whose score is back-propagated: None = the predicted class, an int
            for all inputs, or an (N,) tensor of classes.
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] == 0:
        raise InvalidInputError("guided_backprop expects a non-empty batch tensor N×C×H×W")
    relus = check_guided_model(model)
    guard = _FunctionalReluGuard()
    xg = x.detach().clone().requires_grad_(True)
    with eval_mode(model), torch.enable_grad(), _guided_hooks(relus, guard), guard:
        logits = model(xg)
    if target is None:
        tgt = logits.detach().argmax(dim=1)
    elif isinstance(target, int):
        tgt = torch.full((x.shape[0],), target, dtype=torch.long, device=logits.device)
    else:
        tgt = torch.as_tensor(target, device=logits.device).long().reshape(-1)
        if tgt.shape[0] != x.shape[0]:
            raise InvalidInputError(f"target has {tgt.shape[0]} classes for {x.shape[0]} inputs")
    if int(tgt.min()) < 0 or int(tgt.max()) >= logits.shape[1]:
        raise InvalidInputError(f"target classes must lie in [0, {logits.shape[1]})")
    chosen = logits.gather(1, tgt.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(chosen, xg)
    return grad.detach(), logits.detach()


def guided_backprop(
    model: nn.Module, x: torch.Tensor, target: int | torch.Tensor | None = None
) -> torch.Tensor:
    """Feature-response maps by guided back-propagation (Springenberg et al. 2015).

    R^l = (f^l > 0)·(R^{l+1} > 0)·R^{l+1} at every `nn.ReLU`, from the logit of `target`
    (default: the predicted class) down to the input. Returns a tensor shaped like `x`.

    Raises:
        InvalidInputError: if the model's non-linearities are not `nn.ReLU` modules.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> r = guided_backprop(net, torch.rand(2, 1, 2, 2), target=1)
        >>> r.shape
        torch.Size([2, 1, 2, 2])
    """
    return guided_backprop_and_logits(model, x, target)[0]
