"""Batching, written once: the slices of a batched pass, and a function mapped over batches.

Every batched loop in tripwire — over an `ImageSet`, a tensor of images, an attack's targets —
goes through `batch_slices`; `in_batches` is the common case of a function of a batch whose
results are concatenated.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive slices of at most `batch_size` covering range(n)."""
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def in_batches(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 512
) -> torch.Tensor:
    """`fn` applied to consecutive batches of `x`, results concatenated on the CPU."""
    return torch.cat([fn(x[s]).detach().cpu() for s in batch_slices(len(x), batch_size)])
