"""Models given as `torch.export` programs (``.pt2`` files): what their layers compute.

`torch.export.unflatten` turns a program back into the model's module tree, whose submodules
take forward hooks like any others, but each is a generic `InterpreterModule` running an FX
graph of ATen operations instead of an `nn.ReLU` or an `nn.Linear`. Where tripwire chooses layers
by their kind (activation layers, the classifier head), it asks `program_operation`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.export.unflatten import InterpreterModule


def program_operation(module: nn.Module) -> str | None:
    """The one ATen operation (``"aten::relu"``, ``"aten::linear"``, …) that a submodule of an
    unflattened `torch.export` program computes; None for any other module, or one that
    computes several operations or none."""
    if not isinstance(module, InterpreterModule):
        return None
    calls = [node for node in module.graph.nodes if node.op == "call_function"]
    if len(calls) != 1 or not isinstance(calls[0].target, torch._ops.OpOverload):
        return None
    return calls[0].target._schema.name
