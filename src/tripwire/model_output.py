"""Models whose forward returns more than the logits — a tuple or list, a dict, or an object
with a ``logits`` attribute (as Hugging Face classifiers return).

`select_output` installs a forward hook that replaces such an output by the logits tensor, so
every detector, attack and `Guard` sees the plain N×K logits, and the model's layers keep their
names for feature taps. The choice is an index (tuple, list), a key (dict) or an attribute name;
``"auto"`` takes the tensor itself, else ``logits`` (key or attribute), else the one N×K
floating-point tensor of a tuple or list — and names the choices when there is none, or more
than one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from tripwire.errors import TripwireError

AUTO = "auto"


class ModelOutputError(TripwireError):
    """A model's output has no logits tensor where the output choice points."""


def output_choices(out: Any) -> str:
    """The indices, keys or tensor attributes an output offers, with their shapes."""
    items: list[tuple[int | str, Any]]
    if isinstance(out, Mapping):
        items = [(k, v) for k, v in out.items() if isinstance(k, str)]
    elif isinstance(out, Sequence) and not isinstance(out, str):
        items = list(enumerate(out))
    else:
        attributes = vars(out) if hasattr(out, "__dict__") else {}
        items = [(k, v) for k, v in attributes.items() if isinstance(v, torch.Tensor)]
    shown = [
        f"{k!r} ({'×'.join(map(str, v.shape))})" if isinstance(v, torch.Tensor) else repr(k)
        for k, v in items
    ]
    return ", ".join(shown) or "none"


def require_logits(out: Any) -> torch.Tensor:
    """`out` if the model returned a tensor; else a `ModelOutputError` that says how to choose."""
    if isinstance(out, torch.Tensor):
        return out
    choices = output_choices(out)
    raise ModelOutputError(
        f"the model returns a {type(out).__name__}, not a logits tensor; make it return its "
        f"logits with tripwire.models.select_output(model, output=…) (choices: {choices}; "
        "'auto' takes 'logits', else the one N×K tensor)"
    )


def pick_output(out: Any, output: int | str = AUTO) -> torch.Tensor:
    """The logits in a model's output `out` (see the module docstring for `output`).

    Raises:
        ModelOutputError: the choice does not exist or is not an N×K floating-point tensor; the
            message lists the choices.
    """
    if output == AUTO:
        if isinstance(out, torch.Tensor):
            picked: Any = out
        elif isinstance(out, Mapping) and "logits" in out:
            picked = out["logits"]
        elif not isinstance(out, Mapping | Sequence) and hasattr(out, "logits"):
            picked = out.logits
        elif isinstance(out, Sequence) and not isinstance(out, str):
            candidates = [o for o in out if _is_logits(o)]
            picked = candidates[0] if len(candidates) == 1 else None  # none, or ambiguous
        else:
            picked = None
    elif isinstance(out, Mapping):
        picked = out.get(output)
    elif isinstance(out, Sequence) and isinstance(output, int) and -len(out) <= output < len(out):
        picked = out[output]
    elif isinstance(output, str):
        picked = getattr(out, output, None)
    else:
        picked = None
    if not _is_logits(picked):
        choices = output_choices(out)
        raise ModelOutputError(
            f"the model returns a {type(out).__name__} and output={output!r} gives no N×K "
            f"logits tensor there; choices: {choices} (select one with "
            "tripwire.models.select_output(model, output=…) or --output)"
        )
    return picked  # type: ignore[no-any-return]


def _is_logits(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim == 2 and value.is_floating_point()


class LogitsOf(nn.Module):
    """A model that takes no forward hooks (TorchScript), returning its logits alone."""

    def __init__(self, model: nn.Module, output: int | str) -> None:
        super().__init__()
        self.model, self.output = model, output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pick_output(self.model(x), self.output)


def select_output(model: nn.Module, output: int | str = AUTO) -> nn.Module:
    """Make `model` return its logits alone (a forward hook that replaces one installed before;
    a TorchScript model, which takes no hooks, is wrapped in `LogitsOf` instead).

    Examples:
        >>> model = select_output(hf_classifier, "logits")  # doctest: +SKIP
        >>> model(x).shape                                    # torch.Size([N, K])
    """
    if isinstance(model, torch.jit.ScriptModule):  # takes no hooks: wrap it where needed
        return model if output == AUTO else LogitsOf(model, output)
    previous = getattr(model, "_tripwire_output_hook", None)
    if previous is not None:
        previous.remove()

    def hook(module: nn.Module, args: Any, out: Any) -> torch.Tensor:
        return pick_output(out, output)

    model._tripwire_output_hook = model.register_forward_hook(hook)  # type: ignore[assignment]
    return model


@contextlib.contextmanager
def outputs_of(model: nn.Module) -> Iterator[list[object]]:
    """The outputs of every call of `model` inside the block (none for a TorchScript module,
    which takes no hooks: callers then run it once more for its logits)."""
    outputs: list[object] = []
    if isinstance(model, torch.jit.ScriptModule):
        yield outputs
        return
    handle = model.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    try:
        yield outputs
    finally:
        handle.remove()
