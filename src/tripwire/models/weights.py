"""Model weights on disk: safetensors only (no pickle, no ``torch.load``), with clear errors."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tripwire.errors import FormatError
from tripwire.models.digest import weights_digest

logger = logging.getLogger(__name__)

# The first bytes of what `torch.save` writes: a zip archive (PyTorch ≥ 1.6) or a bare pickle.
_TORCH_SAVE_MAGIC = (b"PK\x03\x04", b"\x80")


def round_to_half(model: nn.Module) -> nn.Module:
    """Round every floating-point parameter and buffer to float16 precision, in place.

    The model keeps its dtype (float32); its values become exactly what a float16 file holds,
    so a model stored with ``save_weights(..., half=True)`` has the same digest when reloaded.
    """
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().to(t.dtype))
    return model


def save_weights(
    model: nn.Module,
    path: str | Path,
    *,
    half: bool = False,
    metadata: dict[str, str] | None = None,
) -> str:
    """Write the model's state dict to a ``.safetensors`` file and return its weights digest.

    Args:
        model: any module; its state dict is stored (on CPU, contiguous).
        path: the file to write (parent folders are created).
        half: store floating-point tensors as float16 (halves the size). The model itself is
            rounded to float16 precision first, so the returned digest matches the stored file.
        metadata: extra string metadata stored in the file header.

    Examples:
        >>> digest = save_weights(LeNet5(), "lenet.safetensors")  # doctest: +SKIP
    """
    if half:
        round_to_half(model)
    digest = weights_digest(model)
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu")
        if half and t.is_floating_point():
            t = t.half()
        tensors[name] = t.contiguous().clone()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={**(metadata or {}), "weights_digest": digest})
    return digest


def safetensors_conversion(path: Path) -> str:
    """The one-line command that turns the `torch.save` state dict at `path` into safetensors."""
    target = path.with_suffix(".safetensors")
    return (
        'python -c "import torch, safetensors.torch as st; '
        f"st.save_file(torch.load('{path}', weights_only=True), '{target}')\""
    )


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a ``.safetensors`` state dict into `model` (strictly: same names, same shapes).

    Tensors are cast to the dtype and device of the model's own tensors. Buffers the file lacks
    (e.g. normalisation constants a wrapper registers) keep the model's own values, with a
    warning; every parameter must be in the file.

    Raises:
        FormatError: the file is missing, a `torch.save` pickle (the message gives the one-line
            conversion), not a safetensors file, truncated, or holds other tensor names or
            shapes than the model.

    Examples:
        >>> model = load_weights(LeNet5(), "lenet.safetensors")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: weights file not found")
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_TORCH_SAVE_MAGIC):
        raise FormatError(
            f"{path}: a PyTorch pickle (torch.save), which tripwire never unpickles; convert the "
            f"state dict once, where you trust the file: {safetensors_conversion(path)}"
        )
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types and OSErrors
        raise FormatError(f"{path}: not a valid safetensors file ({e})") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    buffers = {name for name, _ in model.named_buffers()}
    if missing and not unexpected and set(missing) <= buffers:
        logger.warning(
            "%s holds no %s (buffers of the model, not parameters): keeping the values the "
            "model was built with",
            path,
            _names(missing),
        )
        missing = []
    if missing or unexpected:
        raise FormatError(
            f"{path}: weights do not fit this model; missing {_names(missing)}, "
            f"unexpected {_names(unexpected)}"
        )
    wrong = [k for k, t in tensors.items() if tuple(t.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise FormatError(
            f"{path}: tensor {k!r} has shape {tuple(tensors[k].shape)}, the model expects "
            f"{tuple(own[k].shape)} ({len(wrong)} tensor(s) differ)"
        )
    with torch.no_grad():
        for k, t in tensors.items():
            own[k].copy_(t.to(own[k].dtype))
    return model


def _names(names: list[str], limit: int = 5) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
