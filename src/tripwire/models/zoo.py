"""The model zoo: named training recipes for the reference classifiers, trained once and cached.

A trained model lives in ``<cache>/models/<name>-seed<seed>/`` as ``weights.safetensors`` plus a
JSON ``card.json`` (test accuracy, seed, recipe, data checksum, weights digest, library versions,
training time, date). Loading reads safetensors only and checks the weights against the card.
Models can also ship inside the package (`tripwire.models.stored`): `load_model` uses those first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import platform
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tripwire.data.base import ImageSet, load_source
from tripwire.errors import FormatError, InvalidInputError, ModelMismatchError, TripwireError
from tripwire.locking import exclusive_lock, is_locked
from tripwire.models.digest import weights_digest
from tripwire.models.lenet import LeNet5
from tripwire.models.outlier_exposure import (
    fine_tune_outlier_exposure,
    load_outliers,
    mean_max_softmax,
)
from tripwire.models.resnet_cifar import ResNetCifar
from tripwire.models.small_cnn import SmallCNN
from tripwire.models.stored import load_stored, read_card_json, stored_paths, write_stored
from tripwire.models.training import TrainResult, evaluate_accuracy, train_classifier
from tripwire.models.vgg_cifar import VGG16Cifar
from tripwire.models.weights import load_weights, save_weights
from tripwire.paths import atomic_write
from tripwire.paths import cache_dir as resolve_cache_dir
from tripwire.registry import Registry

logger = logging.getLogger(__name__)

CARD_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "card.json"
CHECKPOINT_DIR = "checkpoint"
OPTIMIZER_NAMES = {"adam": "Adam", "sgd": "SGD (Nesterov, momentum 0.9)"}


class UnknownModelError(TripwireError, KeyError):
    """No zoo recipe has the requested name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ModelNotTrainedError(TripwireError):
    """The zoo model is not in the cache and training was not allowed."""


class TrainingInProgressError(TripwireError):
    """Another process is training the same zoo model (same name and seed) right now."""


@dataclass(frozen=True)
class Recipe:
    """How to build and train one zoo model.

    Attributes:
        name: the zoo name, e.g. ``"lenet-mnist"``.
        description: one line for ``tripwire models list``.
        builder: the model class (or factory); called as ``builder(num_classes=…, **model_kwargs)``.
        model_kwargs: hyper-parameters of the architecture.
        source: the data source (``load_source`` name) with ``"train"`` and ``"test"`` splits.
        input_shape: (C, H, W) the model expects.
        num_classes: number of outputs.
        epochs, batch_size, lr, augment_shift, augment_flip, weight_decay, optimizer,
            mixed_precision: arguments of `train_classifier`.
        half_precision: store the weights as float16 (the large CIFAR models).
        calibration_holdout: share of the training split the model never trains on, kept for
            calibrating detectors' thresholds (see `training_split`); 0 keeps none.
        paper_accuracy: the test accuracy Zhao et al. report for this model, if any.
        base: for an Outlier Exposure twin (see `outlier_exposure_twin`): the zoo model it is
            fine-tuned from (same seed); epochs, batch_size, lr and augment_shift then describe
            the fine-tuning.
        outlier_set: the twin's auxiliary outliers (a data source name or an .npz path).
        outlier_weight: λ of the OE loss.
        outlier_batch_size: outliers per step (None: twice `batch_size`).
    """

    name: str
    description: str
    builder: Callable[..., nn.Module]
    source: str
    input_shape: tuple[int, int, int]
    num_classes: int
    epochs: int
    batch_size: int
    lr: float
    augment_shift: int = 2
    augment_flip: bool = False
    weight_decay: float = 0.0
    optimizer: str = "adam"
    mixed_precision: bool = False
    half_precision: bool = False
    calibration_holdout: float = 0.0
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    paper_accuracy: float | None = None
    base: str | None = None
    outlier_set: str | None = None
    outlier_weight: float = 0.5
    outlier_batch_size: int | None = None

    def build(self, seed: int = 0) -> nn.Module:
        """A freshly initialised model; the initialisation follows `seed` (drawn inside
        ``torch.random.fork_rng``, so the caller's global random state is left untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.builder(num_classes=self.num_classes, **self.model_kwargs)

    def hyperparameters(
        self, epochs: int | None = None, outlier_set: str | None = None
    ) -> dict[str, Any]:
        """The recipe as JSON-ready values (what the card records and compares)."""
        values = {
            "architecture": getattr(self.builder, "__name__", str(self.builder)),
            "model_kwargs": dict(self.model_kwargs),
            "source": self.source,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "epochs": self.epochs if epochs is None else epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "augment_shift": self.augment_shift,
            **({"augment_flip": True} if self.augment_flip else {}),
            "weight_decay": self.weight_decay,
            "optimizer": OPTIMIZER_NAMES[self.optimizer] + " + OneCycleLR",
            **({"mixed_precision": "bfloat16 autocast"} if self.mixed_precision else {}),
            "half_precision": self.half_precision,
        }
        if self.calibration_holdout:
            values["calibration_holdout"] = self.calibration_holdout
        if self.base is not None:  # an Outlier Exposure twin
            values["optimizer"] = OPTIMIZER_NAMES[self.optimizer] + " + cosine annealing"
            values["fine_tuned_from"] = self.base
            values["outlier_set"] = outlier_set or self.outlier_set
            values["outlier_weight"] = self.outlier_weight
            values["outlier_batch_size"] = self.outlier_batch_size or 2 * self.batch_size
        return values


def _own_model_hint(name: str) -> str:
    module = Path(name).stem if name.endswith(".py") else "mymodule"
    return (
        f"For your own model give the function that builds it as '{module}:make_net' "
        "(module:function), and its weights with --weights"
    )


_RECIPES: Registry[Recipe] = Registry("zoo model", UnknownModelError, _own_model_hint)
CALIBRATION_SPLIT_SEED = 20261122


def training_split(
    name: str, data_dir: str | Path | None = None
) -> tuple[ImageSet, ImageSet | None]:
    """(the images zoo model `name` trains on, the calibration images it never sees or None).

    Thresholds calibrated on images the model was trained on are too strict: the model is more
    confident on them than on new inputs, so more than 1 − TPR of new clean inputs get flagged.
    A recipe with ``calibration_holdout > 0`` keeps that share of its training split (a fixed
    seeded split) away from training, for detectors' `calibrate`.

    Examples:
        >>> fit_part, calibration = training_split("cnn-digits8")  # doctest: +SKIP
        >>> len(calibration)  # doctest: +SKIP
        269
    """
    recipe = get_recipe(name)
    train = load_source(recipe.source, "train", data_dir)
    if not recipe.calibration_holdout:
        return train, None
    return train.split(recipe.calibration_holdout, seed=CALIBRATION_SPLIT_SEED)


def register_recipe(recipe: Recipe) -> Recipe:
    """Add a recipe to the zoo (names are unique)."""
    return _RECIPES.add(recipe.name, recipe)


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`, or an UnknownModelError listing the known names."""
    return _RECIPES.lookup(name)


def list_models() -> list[str]:
    """Names of every zoo model, sorted."""
    return _RECIPES.names()


register_recipe(
    Recipe(
        name="lenet-mnist",
        description="LeNet-5: 2 conv + 3 fc",
        builder=LeNet5,
        source="mnist",
        input_shape=(1, 28, 28),
        num_classes=10,
        epochs=5,
        batch_size=128,
        lr=3e-3,
        augment_shift=2,
        paper_accuracy=0.992,
    )
)
register_recipe(
    Recipe(
        name="cnn-digits8",
        description="small CNN: 2 conv + 2 fc (demo default)",
        builder=SmallCNN,
        source="digits8",
        input_shape=(1, 8, 8),
        num_classes=10,
        epochs=15,
        batch_size=64,
        lr=3e-3,
        augment_shift=1,
        calibration_holdout=0.2,
    )
)
# The CIFAR-10 models share one training recipe; they differ in architecture and peak lr.
_cifar10_recipe = partial(
    Recipe,
    source="cifar10",
    input_shape=(3, 32, 32),
    num_classes=10,
    epochs=40,
    batch_size=128,
    augment_shift=4,
    augment_flip=True,
    weight_decay=5e-4,
    optimizer="sgd",
    mixed_precision=True,
    half_precision=True,
)
register_recipe(
    _cifar10_recipe(
        name="resnet-cifar10",
        description="CIFAR ResNet-44",
        builder=ResNetCifar,
        model_kwargs={"depth": 44},
        lr=0.2,
        paper_accuracy=0.9165,
    )
)
register_recipe(
    _cifar10_recipe(
        name="vgg16-cifar10",
        description="VGG-16 with BatchNorm",
        builder=VGG16Cifar,
        lr=0.1,
        paper_accuracy=0.9347,
    )
)


def outlier_exposure_twin(
    base: str,
    outlier_set: str = "font-letters-kz",
    *,
    epochs: int = 2,
    lr: float = 5e-4,
    outlier_weight: float = 0.5,
    outlier_batch_size: int | None = None,
    name: str | None = None,
) -> Recipe:
    """The recipe of zoo model `base` fine-tuned with Outlier Exposure (Hendrycks et al. 2019,
    loss ``CE(f(x_in), y) + λ · mean_out CE(f(x_out), U)``, see
    `tripwire.models.outlier_exposure`): training it loads the plain `base` of the same seed
    (training that first if needed) and fine-tunes it with Adam for `epochs` epochs. Named
    ``<base>-oe`` unless `name` is given; pass it to `register_recipe` to add it to the zoo.

    Examples:
        >>> outlier_exposure_twin("lenet-mnist").name
        'lenet-mnist-oe'
    """
    plain = get_recipe(base)
    return dataclasses.replace(
        plain,
        name=name or f"{base}-oe",
        description=f"{base} + OE ({outlier_set})",
        epochs=epochs,
        lr=lr,
        optimizer="adam",
        paper_accuracy=None,
        base=base,
        outlier_set=outlier_set,
        outlier_weight=outlier_weight,
        outlier_batch_size=outlier_batch_size,
    )


def outlier_exposure_name(base: str) -> str:
    """The name of the registered Outlier Exposure twin of zoo model `base`.

    Raises:
        UnknownModelError: the zoo has no OE twin of `base`.
    """
    get_recipe(base)
    for name, recipe in sorted(_RECIPES.items()):
        if recipe.base == base and recipe.outlier_set is not None:
            return name
    raise UnknownModelError(
        f"the zoo has no Outlier Exposure twin of {base!r}; register one with "
        "register_recipe(outlier_exposure_twin(...))"
    )


# One epoch with as many outliers as digits per step (the paper: 2× as many, 10 epochs) keeps the
# fine-tuning affordable on a shared CPU; see research/notebook.md, "Outlier Exposure".
register_recipe(
    outlier_exposure_twin("lenet-mnist", "font-letters-kz", epochs=1, outlier_batch_size=128)
)


def model_dir(name: str, seed: int = 0, cache_dir: str | Path | None = None) -> Path:
    """``<cache>/models/<name>-seed<seed>``, where the zoo keeps that model's weights and card."""
    return resolve_cache_dir(cache_dir) / "models" / f"{name}-seed{seed}"


def read_card(name: str, seed: int = 0, cache_dir: str | Path | None = None) -> dict | None:
    """The stored card of a zoo model, or None when it is not trained in that cache.

    Raises:
        FormatError: the card exists but is not valid JSON or lacks required fields.
    """
    get_recipe(name)
    path = model_dir(name, seed, cache_dir) / CARD_FILE
    if not path.is_file():
        return None
    card = read_card_json(path, ("name", "seed", "weights_digest", "test_accuracy", "recipe"))
    if card["name"] != name or card["seed"] != seed:
        raise FormatError(f"{path}: card is for {card['name']!r} seed {card['seed']}")
    return card


def recipe_matches(card: dict, name: str | None = None) -> bool:
    """Whether a stored card was trained with the zoo's current recipe (all hyper-parameters)."""
    recipe = get_recipe(name or card["name"])
    return bool(card.get("recipe") == recipe.hyperparameters())


def data_checksum(data: ImageSet) -> str:
    """SHA-256 (hex) of a set's image and label bytes, in order: identifies the training data
    whatever files or generator it came from."""
    h = hashlib.sha256()
    h.update(str(tuple(data.images.shape)).encode() + str(data.images.dtype).encode())
    h.update(data.images.contiguous().numpy().tobytes())
    if data.labels is not None:
        h.update(data.labels.contiguous().numpy().tobytes())
    return h.hexdigest()


def _versions() -> dict[str, str]:
    import safetensors

    from tripwire import __version__

    return {
        "tripwire": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def train_model(
    name: str,
    *,
    seed: int = 0,
    epochs: int | None = None,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool = True,
    outlier_set: str | Path | None = None,
) -> tuple[nn.Module, dict]:
    """Train zoo model `name` with its recipe and store weights + card in the cache.

    Overwrites a model stored under the same name and seed. Initialisation, shuffling,
    augmentation and dropout all follow `seed` (the global random state is left untouched).
    The training state is checkpointed after every epoch in ``<model dir>/checkpoint/``; an
    interrupted run resumes there when called again (and the checkpoint is removed at the end).

    Args:
        name: a zoo name (see `list_models`).
        seed: the training seed; also part of the storage folder name.
        epochs: override the recipe's number of epochs (recorded in the card).
        data_dir: where the training data lives (default: `tripwire.paths.data_dir()`).
        cache_dir: where to store the model (default: `tripwire.paths.cache_dir()`).
        progress: show progress bars.
        resume: continue an interrupted run from its checkpoint (False: start afresh).
            Outlier Exposure twins are not checkpointed (their fine-tuning is short).
        outlier_set: for an Outlier Exposure twin, use this auxiliary set (source name or
            .npz path) instead of the recipe's; recorded in the card.

    Returns:
        The trained model in eval mode, and its card.

    Examples:
        >>> model, card = train_model("cnn-digits8")  # doctest: +SKIP
        >>> card["test_accuracy"] > 0.95  # doctest: +SKIP
        True
    """
    with exclusive_lock(_run_lock_path(name, seed, cache_dir), wait=False) as held:
        if not held:
            raise TrainingInProgressError(
                f"{name} (seed {seed}) is being trained by another process (its checkpoint is "
                f"in {model_dir(name, seed, cache_dir) / CHECKPOINT_DIR}); wait for it to finish"
            )
        return _train_model(
            name,
            seed=seed,
            epochs=epochs,
            data_dir=data_dir,
            cache_dir=cache_dir,
            progress=progress,
            resume=resume,
            outlier_set=outlier_set,
        )


def training_in_progress(name: str, seed: int = 0, cache_dir: str | Path | None = None) -> bool:
    """True while a process is training zoo model `name` (seed `seed`) with `train_model`."""
    return is_locked(_run_lock_path(name, seed, cache_dir))


def _run_lock_path(name: str, seed: int, cache_dir: str | Path | None) -> Path:
    """``<cache>/models/<name>-seed<seed>.training.lock``: held by the process training it."""
    folder = model_dir(name, seed, cache_dir)
    return folder.with_name(folder.name + ".training.lock")


def _train_model(
    name: str,
    *,
    seed: int,
    epochs: int | None,
    data_dir: str | Path | None,
    cache_dir: str | Path | None,
    progress: bool,
    resume: bool,
    outlier_set: str | Path | None,
) -> tuple[nn.Module, dict]:
    """`train_model` once the run lock is held."""
    recipe = get_recipe(name)
    train_set, _ = training_split(name, data_dir)
    test_set = load_source(recipe.source, "test", data_dir)
    if train_set.image_shape != recipe.input_shape:
        raise ModelMismatchError(
            f"{name}: expects images {recipe.input_shape}, source {recipe.source!r} gives "
            f"{train_set.image_shape}"
        )
    n_epochs = recipe.epochs if epochs is None else epochs
    folder = model_dir(name, seed, cache_dir)
    checkpoint = folder / CHECKPOINT_DIR
    if not resume and checkpoint.exists():
        shutil.rmtree(checkpoint)
    logger.info("training %s (seed %d, %d epochs) on %s", name, seed, n_epochs, train_set.name)
    extra: dict[str, Any] = {}
    if recipe.base is not None:
        model, result, extra = _fine_tune_twin(
            recipe,
            train_set,
            test_set,
            seed=seed,
            epochs=n_epochs,
            outlier_set=outlier_set,
            data_dir=data_dir,
            cache_dir=cache_dir,
            progress=progress,
        )
    else:
        model = recipe.build(seed)
        result = train_classifier(
            model,
            train_set,
            test_set,
            epochs=n_epochs,
            batch_size=recipe.batch_size,
            lr=recipe.lr,
            seed=seed,
            augment_shift=recipe.augment_shift,
            augment_flip=recipe.augment_flip,
            weight_decay=recipe.weight_decay,
            optimizer=recipe.optimizer,
            mixed_precision=recipe.mixed_precision,
            progress=progress,
            checkpoint=checkpoint,
        )
    accuracy = result.test_accuracy
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CARD_FILE).unlink(missing_ok=True)  # no card ever describes other weights
    with atomic_write(folder / WEIGHTS_FILE) as tmp:
        digest = save_weights(model, tmp, half=recipe.half_precision, metadata={"name": name})
    if recipe.half_precision:
        accuracy = evaluate_accuracy(model, test_set)
    card = {
        "card_version": CARD_VERSION,
        "name": name,
        "seed": seed,
        "test_accuracy": accuracy,
        "test_accuracy_before_rounding": result.test_accuracy,
        "recipe": recipe.hyperparameters(
            n_epochs, None if outlier_set is None else str(outlier_set)
        ),
        "train_data": {
            "name": train_set.name,
            "n": len(train_set),
            "sha256": data_checksum(train_set),
        },
        "test_data": {"name": test_set.name, "n": len(test_set), "sha256": data_checksum(test_set)},
        "weights_digest": digest,
        "weights_file": WEIGHTS_FILE,
        "versions": _versions(),
        "training_seconds": round(result.seconds, 1),
        "history": result.history,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
    }
    with atomic_write(folder / CARD_FILE) as tmp:  # the card last: it marks the model complete
        tmp.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(checkpoint, ignore_errors=True)
    logger.info("stored %s (test accuracy %.4f) in %s", name, accuracy, folder)
    return model, card


@contextlib.contextmanager
def _training_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``<folder>.lock``, so that concurrent processes asking for the same
    untrained model train it once; the others wait and then load it (not POSIX: no lock, at
    worst the model is trained twice)."""
    logger.debug("waiting for the training lock of %s", folder)
    with exclusive_lock(folder.with_name(folder.name + ".lock")):
        yield


def load_model(
    name: str,
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    train_if_missing: bool = True,
    seed: int = 0,
    progress: bool = True,
    stored_dir: str | Path | None = None,
) -> nn.Module:
    """A trained zoo model in eval mode: the package's stored weights if it ships them, else
    loaded from the cache, else trained and stored in the cache first.

    Loading reads safetensors files only (never a pickle) and checks the weights digest against
    the card (a stored file also against its SHA-256, see `tripwire.models.stored`).

    Args:
        name: a zoo name (see `list_models`): ``"lenet-mnist"``, ``"cnn-digits8"``, …
        data_dir: data directory for training (only used when training).
        cache_dir: the cache holding ``models/<name>-seed<seed>/``.
        train_if_missing: train the model when the cache does not hold it.
        seed: which trained copy (the training seed).
        progress: show progress bars while training.
        stored_dir: the stored-weights folder (default: ``$TRIPWIRE_STORED_MODELS``, else the
            package's ``tripwire/models/stored/``).

    Raises:
        UnknownModelError: no recipe called `name`.
        ModelNotTrainedError: neither stored nor cached, and `train_if_missing` is False.
        CorruptStoredModelError: the stored files do not match their card.
        FormatError: the card or weights file is corrupt or does not fit the architecture.
        ModelMismatchError: the weights are not the ones the card was written for.

    Examples:
        >>> model = load_model("lenet-mnist", data_dir="../shared/data")  # doctest: +SKIP
        >>> model(torch.rand(1, 1, 28, 28)).shape  # doctest: +SKIP
        torch.Size([1, 10])
    """
    recipe = get_recipe(name)
    model = recipe.build()
    stored = load_stored(model, name, seed, stored_dir)
    if stored is not None:
        if not recipe_matches(stored):
            logger.warning(
                "%s: the stored model was trained with another recipe than the zoo's", name
            )
        logger.debug(
            "%s (seed %d): stored weights %s", name, seed, stored_paths(name, seed, stored_dir)[0]
        )
        return model.eval()
    card = read_card(name, seed, cache_dir)
    if card is None:
        if not train_if_missing:
            raise ModelNotTrainedError(
                f"{name} (seed {seed}) is neither stored in the package nor trained in "
                f"{model_dir(name, seed, cache_dir)}; run `tripwire train {name} --seed {seed}`"
            )
        with _training_lock(model_dir(name, seed, cache_dir)):
            card = read_card(name, seed, cache_dir)  # another process may have trained it
            if card is None:
                logger.warning(
                    "%s (seed %d) is neither stored in the package nor trained in the cache: "
                    "training it now on %s (%d epochs; `tripwire train %s` does this ahead of "
                    "time)",
                    name,
                    seed,
                    recipe.source,
                    recipe.epochs,
                    name,
                )
                model, _ = train_model(
                    name, seed=seed, data_dir=data_dir, cache_dir=cache_dir, progress=progress
                )
                return model
    if not recipe_matches(card):
        logger.warning("%s: the cached model was trained with another recipe than the zoo's", name)
    path = model_dir(name, seed, cache_dir) / WEIGHTS_FILE
    load_weights(model, path)
    digest = weights_digest(model)
    if digest != card["weights_digest"]:
        raise ModelMismatchError(
            f"{path}: weights digest {digest} differs from the card's {card['weights_digest']} "
            "(the weights were changed or replaced); retrain with `tripwire train "
            f"{name} --seed {seed} --force`"
        )
    return model.eval()


def store_model(
    name: str,
    *,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    stored_dir: str | Path | None = None,
) -> tuple[Path, Path]:
    """Copy a model trained in the cache into the stored-weights folder (a maintainer step: the
    package then ships it and `load_model` uses it before the cache). Float16 where the recipe
    says ``half_precision``. Returns (weights file, card file).

    Args:
        name: a zoo name.
        seed: which trained copy.
        cache_dir: the cache holding the trained model.
        stored_dir: where to store (default: ``$TRIPWIRE_STORED_MODELS``, else the package's
            ``tripwire/models/stored/``).

    Raises:
        ModelNotTrainedError: the cache does not hold the model.
        ModelMismatchError: the cached weights are not the ones their card describes.

    Examples:
        >>> store_model("resnet-cifar10", seed=0)  # doctest: +SKIP
        (PosixPath('.../tripwire/models/stored/resnet-cifar10-seed0.safetensors'), ...)
    """
    recipe = get_recipe(name)
    card = read_card(name, seed, cache_dir)
    if card is None:
        raise ModelNotTrainedError(
            f"{name} (seed {seed}) is not trained in {model_dir(name, seed, cache_dir)}; "
            f"run `tripwire train {name} --seed {seed}` first"
        )
    model = recipe.build()
    path = model_dir(name, seed, cache_dir) / WEIGHTS_FILE
    load_weights(model, path)
    if weights_digest(model) != card["weights_digest"]:
        raise ModelMismatchError(
            f"{path}: weights digest differs from the card's; retrain before storing"
        )
    return write_stored(model, card, stored_dir, half=recipe.half_precision)


def _fine_tune_twin(
    recipe: Recipe,
    train_set: ImageSet,
    test_set: ImageSet,
    *,
    seed: int,
    epochs: int,
    outlier_set: str | Path | None = None,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[nn.Module, TrainResult, dict[str, Any]]:
    """Train the zoo's OE twin `recipe` (a recipe with ``base`` and ``outlier_set``): load the
    plain ``recipe.base`` model of the same `seed` (training it first when the cache lacks it),
    fine-tune it with `fine_tune_outlier_exposure`, and return the model, the training result and
    the card fields that describe the base model and the outlier exposure (`train_model`).
    """
    if recipe.base is None or recipe.outlier_set is None:
        raise ValueError(f"{recipe.name} is not an Outlier Exposure recipe")
    spec = outlier_set if outlier_set is not None else recipe.outlier_set
    if str(spec) == recipe.source:
        raise InvalidInputError(
            f"the outlier set {spec!r} is the model's own training source; OE needs outliers"
        )
    outliers = load_outliers(spec, recipe.input_shape, data_dir)
    model = load_model(
        recipe.base, seed=seed, data_dir=data_dir, cache_dir=cache_dir, progress=progress
    )
    base_card = read_card(recipe.base, seed, cache_dir)
    assert base_card is not None  # load_model stored it
    base_digest = weights_digest(model)
    base_accuracy = evaluate_accuracy(model, test_set)
    msp_before = mean_max_softmax(model, outliers)
    logger.info(
        "Outlier Exposure: fine-tuning %s (seed %d, test accuracy %.4f) on %s (%d outliers)",
        recipe.base,
        seed,
        base_accuracy,
        outliers.name,
        len(outliers),
    )
    result = fine_tune_outlier_exposure(
        model,
        train_set,
        outliers,
        test_set,
        epochs=epochs,
        batch_size=recipe.batch_size,
        outlier_batch_size=recipe.outlier_batch_size,
        lr=recipe.lr,
        weight=recipe.outlier_weight,
        seed=seed,
        augment_shift=recipe.augment_shift,
        progress=progress,
    )
    fields = {
        "base_model": {
            "name": recipe.base,
            "seed": seed,
            "weights_digest": base_digest,
            "test_accuracy": base_accuracy,
            "card_date": base_card.get("date"),
        },
        "outlier_exposure": {
            "paper": "Hendrycks, Mazeika & Dietterich 2019, Deep Anomaly Detection with "
            "Outlier Exposure",
            "loss": "CE(f(x_in), y) + lambda * mean_out(-mean_k log softmax_k f(x_out))",
            "outlier_set": str(spec),
            "outlier_data": {
                "name": outliers.name,
                "n": len(outliers),
                "sha256": data_checksum(outliers),
            },
            "lambda": recipe.outlier_weight,
            "epochs": epochs,
            "outlier_msp_before": msp_before,
            "outlier_msp_after": mean_max_softmax(model, outliers),
            "test_accuracy_change": result.test_accuracy - base_accuracy,
        },
    }
    return model, result, fields
