"""The classifier head of a model: its last linear layer, and that layer's input — the
*penultimate features* h(x), with logits f(x) = W·h(x) + b.

KNN (Sun et al. 2022), ViM (Wang et al. 2022) and other post-hoc detectors work on h(x) and, for
ViM, on W and b. The head is the last `nn.Linear` the model registers (in a `torch.export`
program, the last layer that computes ``aten::linear``, `tripwire.exported`);
`tripwire.features.extract_features` checks on the first batch that W·h + b reproduces the
model's output, so a model whose output is not that layer's (a scaled or post-processed output)
is refused with a clear message instead of being scored on the wrong features.
"""

from __future__ import annotations

import torch
from torch import nn

from tripwire.errors import InvalidInputError
from tripwire.exported import program_operation
from tripwire.model_output import require_logits


def is_linear(module: nn.Module) -> bool:
    """Whether `module` is an `nn.Linear`, or the layer of an unflattened `torch.export` program
    that computes one (with its 2-D ``weight``)."""
    if isinstance(module, nn.Linear):
        return True
    weight = dict(module.named_parameters(recurse=False)).get("weight")
    return program_operation(module) == "aten::linear" and weight is not None and weight.ndim == 2


def classifier_head(model: nn.Module) -> tuple[str, nn.Module]:
    """(name, module) of the last linear layer (`is_linear`) registered in `model`.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> classifier_head(net)[0]
        '3'
    """
    linears = [(n, m) for n, m in model.named_modules() if is_linear(m)]
    if not linears:
        leaves = [n for n, m in model.named_modules() if n and not any(True for _ in m.children())]
        raise InvalidInputError(
            "the model has no nn.Linear layer, so it has no penultimate features for this "
            "detector; choose one that works on logits or on named layers (e.g. mahalanobis "
            f"with layers=[...], gram with layers=[...]) from its layers: {', '.join(leaves)}"
        )
    return linears[-1]


class PenultimateTap:
    """A forward pre-hook on the classifier head keeping its input (flattened to N×D) of the
    last forward. Use as a context manager; the hook is removed on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.name, self.head = classifier_head(model)
        self.features: torch.Tensor | None = None
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def _hook(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self.features = inputs[0].flatten(1)

    def __enter__(self) -> PenultimateTap:
        self._handle = self.head.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def forward(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate features N×D, logits N×K) of one batch, in the caller's grad mode."""
        self.features = None
        logits = require_logits(model(x))
        if self.features is None:
            raise InvalidInputError(
                f"the model's last nn.Linear ({self.name!r}) did not run in forward; it is not "
                "the classifier head"
            )
        return self.features, logits


def check_head_output(head: nn.Module, h: torch.Tensor, logits: torch.Tensor, name: str) -> None:
    """Raise `InvalidInputError` unless head(h) equals the model's `logits`."""
    if logits.ndim != 2 or not torch.allclose(head(h), logits, rtol=1e-4, atol=1e-4):
        raise InvalidInputError(
            f"the model's output is not that of its last nn.Linear ({name!r}), so its "
            "penultimate features are not known; wrap the model so that forward ends with that "
            "layer"
        )


def head_weights(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) of the classifier head as float64 CPU copies (b = 0 for a head without bias), for
    detectors that recompute logits from modified penultimate features."""
    parameters = dict(classifier_head(model)[1].named_parameters(recurse=False))
    weight = parameters["weight"].detach().double().cpu().clone()
    bias = torch.zeros(len(weight), dtype=torch.float64)
    if parameters.get("bias") is not None:
        bias = parameters["bias"].detach().double().cpu().clone()
    return weight, bias


def check_head_state(weight: torch.Tensor, bias: torch.Tensor | None, num_classes: int) -> None:
    """Raise ValueError unless stored head weights are a finite float64 K×D matrix (and K-vector
    `bias`, where one is stored) with K = `num_classes` (used when a detector is loaded)."""
    parts = [weight] if bias is None else [weight, bias]
    if (
        weight.ndim != 2
        or len(weight) != num_classes
        or (bias is not None and bias.shape != (len(weight),))
    ):
        raise ValueError(
            f"head weights {tuple(weight.shape)} (bias "
            f"{None if bias is None else tuple(bias.shape)}) do not fit {num_classes} classes"
        )
    if any(t.dtype != torch.float64 for t in parts):
        raise ValueError("head weights must be float64")
    if not all(bool(torch.isfinite(t).all()) for t in parts):
        raise ValueError("head weights have non-finite entries")
