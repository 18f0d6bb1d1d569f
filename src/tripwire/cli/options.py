"""Options and parsing shared by the sub-commands."""

from __future__ import annotations

import json
from typing import Any

import typer

from tripwire.errors import InvalidInputError

DATA_DIR = typer.Option(
    None,
    "--data-dir",
    help="Data directory (default: $TRIPWIRE_DATA, else ~/.cache/tripwire/data).",
)
CACHE_DIR = typer.Option(
    None, "--cache-dir", help="Cache directory (default: $TRIPWIRE_CACHE, else ~/.cache/tripwire)."
)
MODEL_HELP = (
    "A zoo model (`tripwire models list`); your own factory 'module:function', imported from "
    "the installed packages or the current folder; or a model file: a torch.export program "
    "(.pt2, exported with a dynamic batch size) or TorchScript (detectors that read only the "
    "logits)."
)
WEIGHTS = typer.Option(None, "--weights", help="safetensors weights for a 'module:function' model.")
OUTPUT = typer.Option(
    "auto",
    "--output",
    help="Where a 'module:function' model's forward puts the logits: an index (tuple), a key "
    "(dict) or an attribute; 'auto' takes a tensor as it is, else 'logits', else the one N×K "
    "tensor of a tuple.",
)


def output_choice(value: str) -> int | str:
    """An --output value: an integer index, or a key / attribute name."""
    return int(value) if value.lstrip("-").isdigit() else value


DEVICE = typer.Option(
    None,
    "--device",
    help="Where the model runs (cpu, cuda, cuda:1, mps, …); the detector follows the model. "
    "Default: cpu.",
)


def resolve_device(device: str | None) -> Any:
    """A --device option as a ``torch.device`` (None stays None), or an `InvalidInputError`
    naming a device torch does not know or this machine does not have."""
    if device is None:
        return None
    import torch

    try:
        target = torch.device(device)
        torch.empty(0, device=target)  # raises where the device is absent
    except (RuntimeError, AssertionError) as e:
        reason = str(e).strip().splitlines()[0]
        raise InvalidInputError(f"--device {device!r}: not usable here ({reason})") from None
    if target.type == "meta":
        raise InvalidInputError("--device 'meta': holds no data, so it cannot run a model")
    return target


def to_device(model: Any, device: str | None) -> Any:
    """The model moved to a --device option's device (None: left where it is)."""
    target = resolve_device(device)
    return model if target is None else model.to(target)


PARAM = typer.Option([], "--param", help="Override a default: key=value (repeatable).")
THREADS = typer.Option(
    None,
    "--threads",
    min=1,
    help="torch CPU threads (default: torch's own). Where other jobs share the CPUs, 1 is often "
    "faster: small operations then never wait for a busy second thread.",
)


def set_threads(threads: int | None) -> None:
    """Apply a --threads option (None keeps torch's own choice)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def parse_params(items: list[str]) -> dict[str, Any]:
    """``key=value`` strings → dict; values are read as JSON when they parse (0.3, true, [1, 2]),
    else kept as strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--param expects key=value, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip().replace("-", "_")] = value
    return out
