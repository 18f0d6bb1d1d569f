"""Trained zoo weights shipped inside the package, so nobody (CI included) has to retrain.

A stored model is two files in the stored-weights folder (by default ``tripwire/models/stored/``
inside the installed package; ``$TRIPWIRE_STORED_MODELS`` or an explicit folder overrides it):

* ``<name>-seed<k>.safetensors`` — the weights (float16 where the recipe says
  ``half_precision``), and
* ``<name>-seed<k>.json`` — the model card (as the cache's ``card.json``, plus
  ``weights_sha256``, the SHA-256 of the safetensors file's bytes).

Loading checks the file's SHA-256 against the card before reading it and the weights digest
(`tripwire.models.digest.weights_digest`) after, so a truncated, altered or swapped file is a
clear `CorruptStoredModelError`, never a model with other weights. `tripwire.models.zoo.load_model`
looks here before the cache; `tripwire.models.zoo.store_model` (``tripwire models store``) puts a
trained cache model here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

from tripwire.errors import FormatError
from tripwire.models.digest import weights_digest
from tripwire.models.weights import load_weights, save_weights
from tripwire.paths import atomic_write, file_digest

STORED_ENV = "TRIPWIRE_STORED_MODELS"
REQUIRED = ("name", "seed", "weights_digest", "weights_sha256", "test_accuracy", "recipe")


class CorruptStoredModelError(FormatError):
    """A stored model's files do not match its card (damaged, truncated or replaced)."""


def read_card_json(
    path: Path, required: tuple[str, ...], error: type[FormatError] = FormatError
) -> dict:
    """A model card's JSON object; `error` if it is unreadable or lacks a `required` field."""
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: not a readable model card ({e})") from None
    if not isinstance(card, dict) or any(k not in card for k in required):
        raise error(f"{path}: not a tripwire model card (needs {', '.join(required)})")
    return card


def stored_dir(folder: str | Path | None = None) -> Path:
    """The stored-weights folder: `folder`, else ``$TRIPWIRE_STORED_MODELS``, else the package's
    own ``tripwire/models/stored/``.

    Examples:
        >>> stored_dir("/tmp/zoo").as_posix()
        '/tmp/zoo'
    """
    if folder is not None:
        return Path(folder)
    env = os.environ.get(STORED_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "stored"


def stored_paths(name: str, seed: int, folder: str | Path | None = None) -> tuple[Path, Path]:
    """(weights file, card file) of zoo model `name`, seed `seed`, in the stored folder."""
    base = stored_dir(folder) / f"{name}-seed{seed}"
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def read_stored_card(name: str, seed: int = 0, folder: str | Path | None = None) -> dict | None:
    """The card of a stored model, or None when the folder has no card for it.

    Raises:
        CorruptStoredModelError: the card is not valid JSON, lacks fields, describes another
            model, or its weights file is missing.
    """
    weights, card_path = stored_paths(name, seed, folder)
    if not card_path.is_file():
        return None
    card = read_card_json(card_path, REQUIRED, CorruptStoredModelError)
    if card["name"] != name or card["seed"] != seed:
        raise CorruptStoredModelError(
            f"{card_path}: card is for {card['name']!r} seed {card['seed']}, not {name!r} seed "
            f"{seed}"
        )
    if not weights.is_file():
        raise CorruptStoredModelError(f"{card_path}: its weights file {weights.name} is missing")
    return card


def load_stored(
    model: nn.Module, name: str, seed: int = 0, folder: str | Path | None = None
) -> dict | None:
    """Load the stored weights of `name` (seed `seed`) into `model`; returns the card, or None
    when nothing is stored for it (the model is then left untouched).

    Raises:
        CorruptStoredModelError: the file's SHA-256 or the loaded weights' digest differs from
            the card, or the file does not fit the architecture.

    Examples:
        >>> model = get_recipe("resnet-cifar10").build()  # doctest: +SKIP
        >>> card = load_stored(model, "resnet-cifar10")  # doctest: +SKIP
    """
    card = read_stored_card(name, seed, folder)
    if card is None:
        return None
    weights, _ = stored_paths(name, seed, folder)
    fix = (
        "reinstall tripwire, or delete both stored files to fall back on the cache "
        f"(`tripwire train {name} --seed {seed}`)"
    )
    sha = file_digest(weights)
    if sha != card["weights_sha256"]:
        raise CorruptStoredModelError(
            f"{weights}: SHA-256 {sha[:16]}… differs from the card's "
            f"{str(card['weights_sha256'])[:16]}… (damaged or replaced file); {fix}"
        )
    try:
        load_weights(model, weights)
    except FormatError as e:
        raise CorruptStoredModelError(f"{e}; {fix}") from None
    digest = weights_digest(model)
    if digest != card["weights_digest"]:
        raise CorruptStoredModelError(
            f"{weights}: weights digest {digest} differs from the card's "
            f"{card['weights_digest']}; {fix}"
        )
    return card


def write_stored(
    model: nn.Module,
    card: dict,
    folder: str | Path | None = None,
    *,
    half: bool = False,
) -> tuple[Path, Path]:
    """Write `model` and its `card` (a zoo card with ``name`` and ``seed``) to the stored folder;
    returns (weights file, card file).

    The card is written last and only after the weights digest was checked against it, so a
    stored card always describes the stored weights. Both files are replaced atomically.

    Raises:
        FormatError: `card` lacks name/seed/weights_digest, or the model's weights are not the
            ones the card describes.
    """
    for key in ("name", "seed", "weights_digest"):
        if key not in card:
            raise FormatError(f"card lacks {key!r}; cannot store the model")
    weights, card_path = stored_paths(card["name"], int(card["seed"]), folder)
    weights.parent.mkdir(parents=True, exist_ok=True)
    card_path.unlink(missing_ok=True)  # no stored card ever describes other weights
    with atomic_write(weights) as tmp:
        digest = save_weights(model, tmp, half=half, metadata={"name": str(card["name"])})
        if digest != card["weights_digest"]:
            raise FormatError(
                f"{card['name']} seed {card['seed']}: weights digest {digest} differs from the "
                f"card's {card['weights_digest']}; not stored"
            )
        tmp.chmod(0o644)  # a shipped file must be readable by all, whatever the umask
    out = {**card, "weights_file": weights.name, "weights_sha256": file_digest(weights)}
    with atomic_write(card_path) as tmp:
        tmp.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        tmp.chmod(0o644)
    return weights, card_path
