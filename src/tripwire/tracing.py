"""Whether torch is tracing the code that runs, to export it (`torch.jit.trace`, `torch.export`).

Code whose tensor shapes depend on the data (grouping rows by class, say) takes a fixed-shape
path while traced, so that the exported graph holds for every batch.
"""

from __future__ import annotations

import torch


def tracing() -> bool:
    """True inside `torch.jit.trace` or `torch.export` (strict or not)."""
    return bool(torch.jit.is_tracing() or torch.compiler.is_exporting())


def log1p(x: torch.Tensor) -> torch.Tensor:
    """log(1 + x), exact also for tiny x in an exported graph.

    ONNX has no Log1p: its exporter writes log(1 + x), which is 0 in float32 for x below 6e-8
    (and the confidence of a sure prediction lies there). While tracing, Goldberg's form
    log(u)·x / (u − 1) with u = 1 + x stands in, accurate to a few ulps (Goldberg 1991, "What
    every computer scientist should know about floating-point arithmetic", Theorem 4);
    otherwise `torch.log1p`.
    """
    if not tracing():
        return torch.log1p(x)
    u = 1 + x
    return torch.where(u == 1, x, torch.log(u) * x / (u - 1))
