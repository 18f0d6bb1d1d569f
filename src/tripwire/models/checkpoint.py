"""Resumable training: the full training state after an epoch, as JSON + safetensors (no pickle).

A checkpoint folder holds ``state.safetensors`` (model weights, optimizer moments, random
generator states) and ``state.json`` (epoch, history, optimizer hyper-parameters, scheduler
state, the run's configuration). Training that stops (e.g. a CPU session ending) resumes from the
last finished epoch and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tripwire.errors import FormatError, ModelMismatchError
from tripwire.paths import atomic_write

STATE_FILE = "state.safetensors"
META_FILE = "state.json"
CHECKPOINT_VERSION = 1


@dataclass
class TrainingState:
    """Everything needed to continue a run after `epoch` finished epochs."""

    epoch: int
    history: list[dict[str, float]]
    seconds: float
    config: dict[str, Any]


def save_checkpoint(
    folder: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    state: TrainingState,
) -> None:
    """Write the training state to `folder` atomically (a crash never leaves half a checkpoint)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {
        f"model.{k}": v.detach().to("cpu").contiguous().clone()
        for k, v in model.state_dict().items()
    }
    optim = optimizer.state_dict()
    for index, entries in optim["state"].items():
        for name, value in entries.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().to("cpu").clone()
    tensors["rng.generator"] = generator.get_state()
    tensors["rng.global"] = torch.random.get_rng_state()
    meta = {
        "checkpoint_version": CHECKPOINT_VERSION,
        "epoch": state.epoch,
        "history": state.history,
        "seconds": state.seconds,
        "config": state.config,
        "optimizer_param_groups": optim["param_groups"],
        "scheduler": scheduler.state_dict(),
    }
    (folder / META_FILE).unlink(missing_ok=True)
    with atomic_write(folder / STATE_FILE) as tmp:
        save_file(tensors, str(tmp))
    with atomic_write(folder / META_FILE) as tmp:  # the JSON last: it marks the checkpoint complete
        tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


def checkpoint_progress(folder: str | Path) -> TrainingState | None:
    """The epoch, history and configuration of the checkpoint in `folder` (None when there is none
    or it is unreadable), without loading its tensors — for showing how far a run has come."""
    try:
        meta = json.loads((Path(folder) / META_FILE).read_text(encoding="utf-8"))
        return TrainingState(meta["epoch"], meta["history"], meta["seconds"], meta["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_checkpoint(
    folder: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    config: dict[str, Any],
) -> TrainingState | None:
    """Restore a checkpoint into the given objects; None when `folder` holds none.

    Sets the global torch random state too: call it inside ``torch.random.fork_rng``.

    Raises:
        ModelMismatchError: the checkpoint belongs to a run with another configuration.
        FormatError: the files are corrupt.
    """
    folder = Path(folder)
    meta_path, state_path = folder / META_FILE, folder / STATE_FILE
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        tensors = load_file(str(state_path))
    except Exception as e:  # JSON, safetensors and OS errors alike
        raise FormatError(f"{folder}: unreadable training checkpoint ({e})") from None
    if meta.get("config") != config:
        raise ModelMismatchError(
            f"{folder}: the checkpoint is of another training run ({meta.get('config')}, now "
            f"{config}); delete the folder to start afresh"
        )
    try:
        model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        own = model.state_dict()
        with torch.no_grad():
            for k, v in own.items():
                v.copy_(model_state[k].to(v.dtype))
        groups = meta["optimizer_param_groups"]
        for g in groups:
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": groups})
        scheduler.load_state_dict(meta["scheduler"])
        generator.set_state(tensors["rng.generator"])
        torch.random.set_rng_state(tensors["rng.global"])
        return TrainingState(meta["epoch"], meta["history"], meta["seconds"], meta["config"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise FormatError(f"{folder}: inconsistent training checkpoint ({e})") from None
