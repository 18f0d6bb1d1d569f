"""Outlier Exposure (Hendrycks, Mazeika & Dietterich, "Deep Anomaly Detection with Outlier
Exposure", ICLR 2019): fine-tune a trained classifier so that its softmax on auxiliary outliers
is uniform.

The loss of one step, on an in-distribution batch (x_in, y) and an outlier batch x_out, is

    L = CE(f(x_in), y) + λ · mean_{x ∈ x_out} CE(f(x), U),
    CE(f(x), U) = −(1/K) Σ_k log softmax_k(f(x)),

with U the uniform distribution over the K classes and λ = 0.5 (the paper's value for its
vision experiments). CE(f(x), U) ≥ log K, with equality exactly when the softmax is uniform.

The paper fine-tuned its MNIST LeNet on 50,000 E-MNIST letters, which are not available offline
here; the zoo's ``lenet-mnist-oe`` uses the ``font-letters-kz`` source instead (letters K–Z
rendered from fonts), which shares no images or letters with any test anomaly set (the font
letters there are A–J).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tripwire.data.base import ImageSet, get_source, load_source
from tripwire.data.transforms import conform
from tripwire.errors import DataError, InvalidInputError
from tripwire.models.training import (
    TrainResult,
    evaluate_accuracy,
    model_device,
    random_shift,
)
from tripwire.progress import track

logger = logging.getLogger(__name__)

OE_WEIGHT = 0.5  # λ of Hendrycks et al. 2019


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the cross-entropy from the uniform distribution to the softmax:
    ``−mean_k log softmax_k(logits)`` per row (Hendrycks et al. 2019, the OE term).

    Its minimum, log K, is reached exactly by uniform softmax outputs.

    Examples:
        >>> float(uniform_cross_entropy(torch.zeros(3, 10)))  # log 10
        2.302585...
    """
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise InvalidInputError(f"logits must be N×K with K ≥ 2, got {tuple(logits.shape)}")
    return -F.log_softmax(logits, dim=1).mean(dim=1).mean()


def outlier_exposure_loss(
    logits_in: torch.Tensor,
    labels: torch.Tensor,
    logits_out: torch.Tensor,
    weight: float = OE_WEIGHT,
) -> torch.Tensor:
    """The Outlier Exposure loss ``CE(f(x_in), y) + λ · mean_out CE(f(x_out), U)``
    (Hendrycks et al. 2019), with ``λ = weight`` (0.5 as in the paper).

    Args:
        logits_in: N×K logits of in-distribution inputs.
        labels: their N class labels.
        logits_out: M×K logits of auxiliary outliers.
        weight: λ ≥ 0.

    Examples:
        >>> loss = outlier_exposure_loss(torch.randn(4, 10), torch.arange(4), torch.zeros(8, 10))
        >>> bool(loss > 0.5 * math.log(10))
        True
    """
    if weight < 0:
        raise InvalidInputError(f"the outlier weight λ must be ≥ 0, got {weight}")
    if logits_out.ndim != 2 or logits_out.shape[1] != logits_in.shape[1]:
        raise InvalidInputError(
            f"outlier logits {tuple(logits_out.shape)} do not match in-distribution logits "
            f"{tuple(logits_in.shape)}"
        )
    return F.cross_entropy(logits_in, labels) + weight * uniform_cross_entropy(logits_out)


def load_outliers(
    spec: str | Path,
    image_shape: tuple[int, int, int],
    data_dir: str | Path | None = None,
) -> ImageSet:
    """The auxiliary outlier set `spec`, made to fit `image_shape` with
    `tripwire.data.transforms.conform` (float32 in [0, 1], labels dropped).

    `spec` is a registered data source name (its ``"train"`` split when it has one, else its
    first split) or a path to an ``.npz``/``.npy`` file or image folder.

    Examples:
        >>> load_outliers("font-letters-kz", (1, 28, 28)).image_shape
        (1, 28, 28)
    """
    from tripwire.data.user import load_user_data

    text = str(spec)
    path = Path(text).expanduser()
    if path.exists() or text.endswith((".npz", ".npy")):
        raw = load_user_data(path)
    else:
        source = get_source(text)
        split = "train" if "train" in source.splits else source.splits[0]
        raw = load_source(text, split, data_dir)
    if len(raw) == 0:
        raise DataError(f"{raw.name}: the outlier set is empty")
    images = conform(raw.as_float(), image_shape).contiguous()
    info = {**raw.info, "outlier_set": text}
    return ImageSet(raw.name, images, None, info)


@torch.no_grad()
def mean_max_softmax(model: nn.Module, data: ImageSet, batch_size: int = 1000) -> float:
    """Mean over `data` of the model's maximum softmax probability (eval mode, restored)."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for x in data.batches(batch_size):
            total += float(F.softmax(model(x.to(device)), dim=1).amax(1).sum())
    finally:
        model.train(was_training)
    return total / max(1, len(data))


def _outlier_batches(n: int, size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless index batches of `size` (at most n) over reshuffled passes of range(n)."""
    size = min(size, n)
    while True:
        order = torch.randperm(n, generator=generator)
        for i in range(0, n - size + 1, size):
            yield order[i : i + size]


def fine_tune_outlier_exposure(
    model: nn.Module,
    train_set: ImageSet,
    outliers: ImageSet,
    test_set: ImageSet | None = None,
    *,
    epochs: int = 2,
    batch_size: int = 128,
    outlier_batch_size: int | None = None,
    lr: float = 5e-4,
    weight: float = OE_WEIGHT,
    seed: int = 0,
    augment_shift: int = 2,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune a trained classifier in place with Outlier Exposure (Hendrycks et al. 2019).

    Each step takes an in-distribution batch (x_in, y) and an outlier batch x_out and minimises
    ``CE(f(x_in), y) + λ · mean_out(−mean_k log softmax_k f(x_out))`` with Adam, the learning rate
    annealed from `lr` to 0 by a cosine over all steps (the paper's fine-tuning schedule). One
    epoch is one pass over `train_set`; the outliers are drawn in reshuffled passes of their own
    (`outlier_batch_size`, default ``2 · batch_size`` as in the paper). Both kinds of input are
    shifted by random offsets in ±`augment_shift` pixels. Every random draw follows `seed`
    (dropout inside ``torch.random.fork_rng``; the caller's random state is left untouched).
    Runs on the model's device; leaves the model in eval mode.

    Args:
        model: classifier taking N×C×H×W images in [0, 1] and returning logits.
        train_set: labelled in-distribution training set.
        outliers: auxiliary outliers with the model's image shape (see `load_outliers`); must be
            disjoint from every set the detector will be tested on.
        test_set: labelled set whose accuracy is measured after every epoch (None: skip).
        epochs, batch_size, lr: the schedule.
        weight: λ of the outlier term.

    Returns:
        The final test accuracy (NaN without `test_set`), the per-epoch history (``train_loss``,
        ``in_loss``, ``outlier_loss``, ``outlier_msp`` = mean max-softmax on the training
        outliers, ``train_accuracy``, ``test_accuracy``, ``lr``, ``seconds``) and the seconds.

    Examples:
        >>> model = load_model("lenet-mnist")  # doctest: +SKIP
        >>> fine_tune_outlier_exposure(model, load_source("mnist", "train"),
        ...     load_outliers("font-letters-kz", (1, 28, 28)), epochs=2)  # doctest: +SKIP
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(
            f"need epochs ≥ 1, batch_size ≥ 1, lr > 0; got {epochs}, {batch_size}, {lr}"
        )
    if weight < 0:
        raise InvalidInputError(f"the outlier weight λ must be ≥ 0, got {weight}")
    labels = train_set.require_labels()
    if len(train_set) == 0 or len(outliers) == 0:
        raise DataError(f"need training images and outliers; got {len(train_set)}, {len(outliers)}")
    if outliers.image_shape != train_set.image_shape:
        raise DataError(
            f"{outliers.name}: outliers are {outliers.image_shape}, training images "
            f"{train_set.image_shape}; make them fit with load_outliers"
        )
    if test_set is not None:
        test_set.require_labels()
    n_out_batch = outlier_batch_size or 2 * batch_size
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(len(train_set) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))
    )
    out_batches = _outlier_batches(len(outliers), n_out_batch, generator)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(len(train_set), generator=generator)
            slices = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
            batches = track(slices, f"OE epoch {epoch}/{epochs}") if progress else iter(slices)
            sums = {"loss": 0.0, "in": 0.0, "out": 0.0, "msp": 0.0}
            correct = n_out = 0
            for idx in batches:
                out_idx = next(out_batches)
                x = random_shift(train_set.as_float(idx), augment_shift, generator)
                x_out = random_shift(outliers.as_float(out_idx), augment_shift, generator)
                logits = model(torch.cat([x, x_out]).to(device))
                logits_in, logits_out = logits[: len(idx)], logits[len(idx) :]
                y = labels[idx].to(device)
                loss_in = F.cross_entropy(logits_in, y)
                loss_out = uniform_cross_entropy(logits_out)
                loss = loss_in + weight * loss_out
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                schedule.step()
                sums["loss"] += float(loss.detach()) * len(idx)
                sums["in"] += float(loss_in.detach()) * len(idx)
                sums["out"] += float(loss_out.detach()) * len(out_idx)
                sums["msp"] += float(F.softmax(logits_out.detach(), 1).amax(1).sum())
                correct += int((logits_in.detach().argmax(1) == y).sum())
                n_out += len(out_idx)
            accuracy = float("nan") if test_set is None else evaluate_accuracy(model, test_set)
            n = len(train_set)
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": sums["loss"] / n,
                    "in_loss": sums["in"] / n,
                    "outlier_loss": sums["out"] / n_out,
                    "outlier_msp": sums["msp"] / n_out,
                    "train_accuracy": correct / n,
                    "test_accuracy": accuracy,
                    "lr": opt.param_groups[0]["lr"],
                    "seconds": time.perf_counter() - start,
                }
            )
            logger.info(
                "OE epoch %d/%d: loss %.4f (in %.4f, outliers %.4f), test accuracy %.4f",
                epoch,
                epochs,
                history[-1]["train_loss"],
                history[-1]["in_loss"],
                history[-1]["outlier_loss"],
                accuracy,
            )
    model.eval()
    return TrainResult(history[-1]["test_accuracy"], history, time.perf_counter() - start)
