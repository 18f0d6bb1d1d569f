"""Naming a model so that a saved detector can find it again: a zoo name, or a user's Python
entry point plus a safetensors weights file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from tripwire.errors import TripwireError


@dataclass(frozen=True)
class ModelReference:
    """Where a model comes from.

    Attributes:
        name: a zoo name (``"lenet-mnist"``) or an entry point (``"pkg.module:factory"``).
        weights: the safetensors file for an entry point (None for zoo models).
        seed: which trained copy of a zoo model.
    """

    name: str
    weights: str | None = None
    seed: int = 0

    @property
    def is_zoo(self) -> bool:
        """True for zoo names (entry points contain a colon)."""
        return ":" not in self.name

    def as_dict(self) -> dict[str, str]:
        """String fields for a detector's JSON (`Detector.model_ref_`)."""
        out = {"name": self.name, "seed": str(self.seed)}
        if self.weights is not None:
            out["weights"] = str(Path(self.weights).resolve())
        return out

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> ModelReference:
        """Inverse of `as_dict`; a clear error when the detector names no model."""
        if "name" not in d:
            raise TripwireError(
                "this detector does not record which model it was fitted for; "
                "pass the model explicitly (--model/--weights)"
            )
        return cls(d["name"], d.get("weights"), int(d.get("seed", "0")))

    def load(
        self, data_dir: str | Path | None = None, cache_dir: str | Path | None = None
    ) -> nn.Module:
        """The model in eval mode (a zoo model is trained first if the cache lacks it)."""
        from tripwire.models.user import load_user_model
        from tripwire.models.zoo import load_model

        if self.is_zoo:
            return load_model(self.name, data_dir=data_dir, cache_dir=cache_dir, seed=self.seed)
        return load_user_model(self.name, self.weights)
