"""What a classifier looks like from outside: input shape, number of classes, size."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tripwire.errors import InvalidInputError
from tripwire.models.training import model_device


@dataclass(frozen=True)
class ModelInfo:
    """Facts about a classifier found by a dry forward pass.

    Attributes:
        input_shape: (C, H, W) that was fed.
        num_classes: the number of logits.
        num_parameters: trainable and frozen parameters.
        device: where the model lives.
    """

    input_shape: tuple[int, int, int]
    num_classes: int
    num_parameters: int
    device: str


@torch.no_grad()
def model_info(model: nn.Module, input_shape: tuple[int, int, int]) -> ModelInfo:
    """Run one zero image of `input_shape` through `model` (in eval mode; the mode is restored)
    and report the number of classes it outputs.

    Raises:
        InvalidInputError: the model fails on that shape or does not return N×K logits.

    Examples:
        >>> model_info(LeNet5(), (1, 28, 28)).num_classes
        10
    """
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        out = model(torch.zeros(2, *input_shape, device=device))
    except RuntimeError as e:
        raise InvalidInputError(
            f"{type(model).__name__} does not accept inputs of shape {input_shape}: {e}"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InvalidInputError(
            f"{type(model).__name__} must return N×K logits, returned {shape} for 2 inputs"
        )
    return ModelInfo(
        input_shape=tuple(input_shape),  # type: ignore[arg-type]
        num_classes=int(out.shape[1]),
        num_parameters=sum(p.numel() for p in model.parameters()),
        device=str(device),
    )
