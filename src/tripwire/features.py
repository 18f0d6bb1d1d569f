"""Feature extraction from any `nn.Module` with forward hooks: one forward pass gives every
detector what it reads.

Named layers → activations, pooled inside the hook (so full feature maps of a whole data set are
never held), the penultimate features (the input of the classifier head, `tripwire.head`) when
asked for, plus the logits, which are always there. The model is never rewritten: hooks are
removed and the train/eval mode restored afterwards, whatever happens.

Pooling of a conv map C×H×W (Zhao et al. §4 reduce the MDL to its channel means):

* ``"mean"`` — per-channel spatial mean, C numbers (the paper's; the authors' code sums, which is
  the same after standardisation);
* ``"max"`` — per-channel spatial maximum;
* ``"meanstd"`` — per-channel mean and standard deviation, 2·C numbers;
* ``"gram"`` — the row sums of the map's first-order Gram matrix F·Fᵀ (F: C × positions), the
  order-1 statistic of Sastry & Oore (2020): each channel's map dotted with the sum of all
  channels' maps, C numbers, in float64;
* ``"none"`` — the flattened map, C·H·W numbers.

Dense outputs (N×D) are used as they are, whatever the pooling. Token sequences N×T×D (the
3-D outputs of transformer blocks) are pooled the same way over their T tokens, D numbers (2·D
for ``"meanstd"``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from tripwire.errors import InvalidInputError
from tripwire.exported import program_operation
from tripwire.head import PenultimateTap, check_head_output
from tripwire.model_output import require_logits
from tripwire.progress import track

Pooling = Literal["mean", "max", "meanstd", "gram", "none"]
POOLINGS: tuple[str, ...] = ("mean", "max", "meanstd", "gram", "none")

# Modules whose output only restates their input's information; not offered as feature layers.
_SKIPPED = (nn.Dropout, nn.Dropout2d, nn.Flatten, nn.Identity)


def list_layers(model: nn.Module, *, leaves_only: bool = True) -> list[str]:
    """Names of the layers whose outputs can be asked for, in forward-definition order.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
        >>> list_layers(net)
        ['0', '1', '3']
    """
    names = []
    for name, module in model.named_modules():
        if not name or isinstance(module, _SKIPPED):
            continue
        if leaves_only and any(True for _ in module.children()):
            continue
        names.append(name)
    return names


def output_shapes(
    model: nn.Module, sample: torch.Tensor, names: Sequence[str]
) -> dict[str, list[tuple[int, ...]]]:
    """Run `model` once on `sample` (eval mode, no gradients) and return, for each named module
    that ran, the shape of its output at each of its calls (the first tensor of a tuple output),
    in the order the modules first ran."""
    modules = dict(model.named_modules())
    shapes: dict[str, list[tuple[int, ...]]] = {}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(_module: nn.Module, _inputs: object, output: object) -> None:
            out = output[0] if isinstance(output, tuple | list) else output
            if isinstance(out, torch.Tensor):
                shapes.setdefault(name, []).append(tuple(int(d) for d in out.shape))

        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    try:
        with eval_mode(model), torch.no_grad():
            model(sample.to(model_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def layers_that_run(model: nn.Module, sample: torch.Tensor) -> list[str]:
    """The `list_layers` names whose module is called when `model` runs on `sample` (a module
    can hold weights the forward uses without calling it), in definition order."""
    names = list_layers(model)
    ran = output_shapes(model, sample, names)
    return [n for n in names if n in ran]


ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Softplus,
    nn.Tanh,
    nn.Sigmoid,
)
"""The element-wise non-linearities whose outputs detectors monitor as "the activations"."""

# The ATen operations of `ACTIVATIONS`, as the layers of `torch.export` programs compute them.
_ACTIVATION_OPERATIONS = frozenset(
    f"aten::{op}"
    for op in (
        "relu", "relu_", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "prelu",
        "_prelu_kernel", "elu", "elu_", "selu", "celu", "gelu", "silu", "silu_", "mish",
        "hardswish", "softplus", "tanh", "sigmoid",
    )
)  # fmt: skip


def is_activation(module: nn.Module) -> bool:
    """Whether `module` is one of `ACTIVATIONS`, or the layer of an unflattened `torch.export`
    program that computes one (`tripwire.exported`)."""
    return isinstance(module, ACTIVATIONS) or program_operation(module) in _ACTIVATION_OPERATIONS


def pool(activation: torch.Tensor, pooling: Pooling = "mean") -> torch.Tensor:
    """Reduce one layer's activation to an N×D matrix (see the module docstring). Feature maps
    N×C×H×W… are pooled over their positions; N×T×D token sequences (the 3-D outputs of
    transformer blocks, which act on the last dimension) over their tokens."""
    if activation.ndim == 2:
        return activation
    if activation.ndim < 2:
        return activation.reshape(activation.shape[0], -1)
    if activation.ndim == 3:  # N×T×D tokens → N×D×T
        activation = activation.transpose(1, 2)
    flat = activation.flatten(2)  # N×C×(H·W…)
    if pooling == "mean":
        return flat.mean(dim=2)
    if pooling == "max":
        return flat.amax(dim=2)
    if pooling == "meanstd":
        # The norm of the centred values: torch.std / std_mean over this dimension took 20 ms
        # for a LeNet batch (256×6×784) on CPU, this 1 ms (torch 2.13, one thread), same values.
        mean = flat.mean(dim=2, keepdim=True)
        std = torch.linalg.vector_norm(flat - mean, dim=2) / math.sqrt(flat.shape[2])
        return torch.cat([mean.squeeze(2), std], dim=1)
    if pooling == "gram":
        return gram_row_sums(flat.double())
    if pooling == "none":
        return activation.flatten(1)
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")


def gram_row_sums(f: torch.Tensor) -> torch.Tensor:
    """The row sums of the Gram matrices F·Fᵀ of a batch of N×C×P maps: N×C. Computed as
    F·(Fᵀ·1), C·P operations instead of the Gram matrix's C²·P."""
    return torch.bmm(f, f.sum(dim=1).unsqueeze(2)).squeeze(2)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` in eval mode and restore every submodule's own train/eval flag afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


class LayerTap:
    """Forward hooks on named layers that keep each layer's pooled output of the last forward,
    in the caller's grad mode (differentiable in the input where gradients are enabled).

    Use as a context manager; the hooks are removed on exit.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
        >>> with LayerTap(net, ["1"]) as tap:
        ...     logits = net(torch.rand(5, 1, 8, 8))
        >>> tap.outputs["1"].shape
        torch.Size([5, 4])
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        pooling: Pooling | Mapping[str, Pooling] = "mean",
    ) -> None:
        modules: dict[str, nn.Module] = {}
        for name in layers:  # a lookup per layer: the whole module table costs more per batch
            with contextlib.suppress(AttributeError):
                modules[name] = model.get_submodule(name)
        missing = [name for name in layers if name not in modules or not name]
        if missing:
            raise InvalidInputError(
                f"unknown layer(s) {missing}; available: {', '.join(list_layers(model))}"
            )
        self.model = model
        self.layers = list(layers)
        self.pooling = {
            name: (pooling if isinstance(pooling, str) else pooling.get(name, "mean"))
            for name in self.layers
        }
        for name, p in self.pooling.items():
            if p not in POOLINGS:
                raise ValueError(f"layer {name}: unknown pooling {p!r}; choose one of {POOLINGS}")
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._modules = modules

    def _hook(self, name: str):  # type: ignore[no-untyped-def]
        pooling = self.pooling[name]

        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            out = output[0] if isinstance(output, tuple | list) else output
            assert isinstance(out, torch.Tensor)
            self.outputs[name] = pool(out, pooling)

        return hook

    def __enter__(self) -> LayerTap:
        for name in self.layers:
            self._handles.append(self._modules[name].register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@dataclass(frozen=True)
class Features:
    """What one forward pass over a set of inputs gives, all on the CPU: the logits (N×K), the
    pooled activations of named layers, the penultimate features (N×D; None unless asked for),
    the inputs' C×H×W shape and, where known, their labels (N,)."""

    logits: torch.Tensor
    layers: dict[str, torch.Tensor]
    penultimate: torch.Tensor | None = None
    input_shape: tuple[int, int, int] | None = None
    labels: torch.Tensor | None = None

    @property
    def predicted(self) -> torch.Tensor:
        """The model's predicted class per input."""
        return self.logits.argmax(dim=1)

    def classes(self) -> torch.Tensor:
        """The labels where known, else the predicted classes."""
        return self.predicted if self.labels is None else self.labels

    def __len__(self) -> int:
        return len(self.logits)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameter-free model)."""
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 if it has none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def extract_features(
    model: nn.Module,
    batches: Iterator[torch.Tensor] | Sequence[torch.Tensor],
    layers: Sequence[str] = (),
    pooling: Pooling | Mapping[str, Pooling] = "mean",
    *,
    penultimate: bool = False,
) -> Features:
    """Run `model` once over `batches` (float N×C×H×W in [0, 1]) and collect the logits, the
    pooled `layers` and, with `penultimate`, the classifier head's input.

    Runs under `torch.no_grad()` in eval mode; the model's mode is restored and all hooks removed
    afterwards. Only pooled features are kept, so memory grows with N·D, not with map sizes.

    Raises:
        InvalidInputError: no batches; an unknown layer; with `penultimate`, a model without an
            `nn.Linear` head or whose output is not that head's (checked on the first batch).

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
        >>> f = extract_features(net, [torch.rand(8, 1, 8, 8)], ["1"], penultimate=True)
        >>> f.logits.shape, f.layers["1"].shape, f.penultimate.shape
        (torch.Size([8, 2]), torch.Size([8, 4]), torch.Size([8, 144]))
    """
    device = model_device(model)
    logits: list[torch.Tensor] = []
    heads: list[torch.Tensor] = []
    collected: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    shape: tuple[int, int, int] | None = None
    with contextlib.ExitStack() as stack:
        stack.enter_context(eval_mode(model))
        stack.enter_context(torch.no_grad())
        tap = stack.enter_context(LayerTap(model, layers, pooling))
        head = stack.enter_context(PenultimateTap(model)) if penultimate else None
        for x in track(batches, "feature pass"):
            if head is None:
                out = require_logits(model(x.to(device)))
            else:
                h, out = head.forward(model, x.to(device))
                if not heads:
                    check_head_output(head.head, h, out, head.name)
                heads.append(h.cpu())
            if shape is None:
                c, hh, w = x.shape[1:]
                shape = (int(c), int(hh), int(w))
            logits.append(out.cpu())
            silent = (
                [name for name in layers if name not in tap.outputs] if len(logits) == 1 else []
            )
            if silent:  # checked on the first batch: a module the forward skips never runs
                raise InvalidInputError(
                    f"layer(s) {silent} did not run in the forward pass (a module whose weights "
                    "the model uses without calling it, such as nn.MultiheadAttention's "
                    f"out_proj); layers that run: {', '.join(layers_that_run(model, x[:1]))}"
                )
            for name in layers:
                collected[name].append(tap.outputs[name].cpu())
    if not logits:
        raise InvalidInputError("no inputs to extract features from")
    return Features(
        logits=torch.cat(logits),
        layers={k: torch.cat(v) for k, v in collected.items()},
        penultimate=torch.cat(heads) if penultimate else None,
        input_shape=shape,
    )
