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
        name: a zoo name (``"lenet-mnist"``), an entry point (``"pkg.module:factory"``) or the
            path of a model file (a ``torch.export`` program or TorchScript).
        weights: the safetensors file for an entry point (None for zoo models).
        seed: which trained copy of a zoo model.
        train_if_missing: train a zoo model the cache lacks (else `ModelNotTrainedError`).
        output: where the logits are in an entry-point model's output (`select_output`):
            ``"auto"``, an index, a key or an attribute name.
    """

    name: str
    weights: str | None = None
    seed: int = 0
    train_if_missing: bool = True
    output: int | str = "auto"

    @property
    def is_file(self) -> bool:
        """True for a model file (`load_model_file`) given by its path (a ``.py`` file is code: its
        factory is named as ``module:function``)."""
        return Path(self.name).is_file() and Path(self.name).suffix != ".py"

    @property
    def is_zoo(self) -> bool:
        """True for zoo names (entry points contain a colon; files exist)."""
        return ":" not in self.name and not self.is_file

    def as_dict(self) -> dict[str, str | int]:
        """What a detector's JSON records of the model (`Detector.model_ref_`), for messages and
        for naming a zoo model: the name (a file's name without its folder), and a zoo model's
        seed — never a path."""
        if self.is_zoo:
            return {"name": self.name, "seed": self.seed}
        return {"name": Path(self.name).name if self.is_file else self.name}

    @classmethod
    def recorded_zoo_model(cls, recorded: dict[str, object]) -> ModelReference:
        """The zoo model a detector file names (`Detector.model_ref_`), checked against the zoo.

        A detector file is data: nothing it names is imported, called or trained. Only a name
        the zoo knows is accepted, and `load` then reads stored or cached weights only.

        Raises:
            TripwireError: the file names no model, or one that is not a zoo model (an entry
                point, an unknown name): the model must then be given explicitly.
        """
        from tripwire.models.zoo import list_models

        name, seed = recorded.get("name"), recorded.get("seed", 0)
        if not isinstance(name, str) or name not in list_models() or not isinstance(seed, int):
            what = "no model" if name is None else f"the model {name!r}, not a zoo model,"
            raise TripwireError(
                f"this detector records {what} as the one it was fitted for; pass that model "
                "with --model (and --weights). A detector file never names code to run."
            )
        return cls(name, None, seed, train_if_missing=False)

    def load(
        self, data_dir: str | Path | None = None, cache_dir: str | Path | None = None
    ) -> nn.Module:
        """The model in eval mode (a zoo model is trained first if the cache lacks it and
        `train_if_missing`). An entry point's module is imported from the installed packages or
        from the current folder, as ``python -m`` would, and the model is made to return its
        logits alone (`output`)."""
        from tripwire.model_output import select_output
        from tripwire.models.user import load_model_file, load_user_model
        from tripwire.models.zoo import load_model

        if self.is_zoo:
            return load_model(
                self.name,
                data_dir=data_dir,
                cache_dir=cache_dir,
                seed=self.seed,
                train_if_missing=self.train_if_missing,
            )
        if self.is_file:
            model = load_model_file(self.name)
        else:
            model = load_user_model(self.name, self.weights, search_path=Path.cwd())
        return select_output(model, self.output)
