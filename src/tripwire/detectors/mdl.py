"""Choosing the Most Discriminative Layer (MDL) without test anomalies.

Zhao et al. (§4, Fig. 1 step 1) pick the MDL as the layer whose one-class models have the lowest
detection error on a "mix" OOD set; their code used a known OOD set (TinyImageNet for CIFAR
models), i.e. selection saw the kind of data it was then tested on. Here each candidate layer is
ranked by the AUROC of its class-conditional one-class SVM score between held-out ID images and
validation anomalies that are either given explicitly or made from ID images by
`tripwire.detectors.proxies` — never a test set — aggregated over the validation sets by their
mean or their median (`AGGREGATES`). The median is not decided by one set's swing: over the
five proxies on a VGG-16, the mean preferred ``relu5_2`` to ``conv3_2`` by 0.008, on the strength
of the mixup proxy alone (0.77 against 0.58, while losing pixel shuffles 0.88 against 1.00),
where the median prefers ``conv3_2`` by 0.07.

Near-ties go to the earlier layer, as the paper's picks are early layers: a layer within 0.005
of the best aggregate counts as tied. That is under two standard errors of one such AUROC (1,000
held-out images against 1,000 anomalies at AUROC ≈ 0.98: ≈ 0.003 by Hanley & McNeil 1982), so a
smaller lead is not evidence. With the old tolerance (0.001) the `meanstd` choice on the zoo
LeNet jumped between relu1, pool1 and conv2 across training seeds, and conv2 lost up to 6 points
on BIM-b of training images.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from tripwire.data.base import ImageSet
from tripwire.detectors.ocsvm import ClassConditionalOCSVM
from tripwire.detectors.proxies import make_proxies
from tripwire.features import Pooling, extract_features, layers_that_run
from tripwire.metrics import auroc

TIE = 5e-3  # AUROC lead below which layers count as tied (module docstring)
Aggregate = Literal["mean", "median"]
AGGREGATES: dict[Aggregate, Callable[[list[float]], float]] = {
    "mean": statistics.fmean,
    "median": statistics.median,
}


@dataclass(frozen=True)
class LayerChoice:
    """The chosen layer and the criterion of every candidate (its aggregate AUROC over the
    validation sets, and its AUROC per set)."""

    layer: str
    criterion: dict[str, float]
    per_set: dict[str, dict[str, float]]


def candidate_layers(model: nn.Module, sample: torch.Tensor, pooling: Pooling) -> list[str]:
    """Layers before the logits whose pooled output has at least 2 dimensions.

    Layers whose pooled output equals the logits (the last layer) are left out, and so are
    one-dimensional ones (e.g. an input normalisation of a grey image) and modules the forward
    pass never calls.
    """
    names = layers_that_run(model, sample[:2])
    feats = extract_features(model, [sample[:2]], names, pooling)
    out = []
    for name in names:
        f = feats.layers[name]
        if f.shape[1] < 2 or (f.shape == feats.logits.shape and torch.equal(f, feats.logits)):
            continue
        out.append(name)
    return out


def choose_layer(
    model: nn.Module,
    fit_images: torch.Tensor,
    heldout_images: torch.Tensor,
    validation_sets: dict[str, torch.Tensor],
    candidates: Sequence[str],
    *,
    num_classes: int,
    nu: float,
    gamma: float | str,
    pooling: Pooling,
    aggregate: Aggregate = "mean",
    batch_size: int = 512,
) -> LayerChoice:
    """Rank `candidates` by how well a per-class one-class SVM on each separates held-out ID
    images from the validation sets (the `aggregate` of its AUROCs over the sets); return the
    best (earliest on ties) with all values."""
    layers = list(candidates)

    def feats(x: torch.Tensor):  # type: ignore[no-untyped-def]
        return extract_features(model, x.split(batch_size), layers, pooling)

    fit = feats(fit_images)
    held = feats(heldout_images)
    val = {name: feats(x) for name, x in validation_sets.items()}
    per_set: dict[str, dict[str, float]] = {}
    for layer in layers:
        svm = ClassConditionalOCSVM.fit(
            fit.layers[layer], fit.predicted, num_classes, nu=nu, gamma=gamma
        )
        id_scores = svm.score(held.layers[layer], held.predicted)
        per_set[layer] = {
            name: auroc(id_scores, svm.score(f.layers[layer], f.predicted))
            for name, f in val.items()
        }
    return rank_layers(per_set, aggregate)


def rank_layers(per_set: dict[str, dict[str, float]], aggregate: Aggregate) -> LayerChoice:
    """The choice from every candidate's AUROC per validation set (candidates in model order):
    the earliest layer whose `aggregate` over the sets is within `TIE` of the best."""
    criterion = {layer: AGGREGATES[aggregate](list(v.values())) for layer, v in per_set.items()}
    best = max(criterion.values())
    chosen = next(layer for layer, value in criterion.items() if value >= best - TIE)
    return LayerChoice(chosen, criterion, per_set)


def choose_layer_from_sets(
    model: nn.Module,
    fit_set: ImageSet,
    held_set: ImageSet,
    anomalies: ImageSet | None,
    *,
    seed: int,
    num_classes: int,
    nu: float,
    gamma: float | str,
    pooling: Pooling,
    aggregate: Aggregate = "mean",
) -> LayerChoice:
    """`choose_layer` over every candidate layer, on a seeded 3,000 of `fit_set`, 1,000 of the
    held-out `held_set`, and as validation sets the given `anomalies` (up to 2,000) or, without
    them, the synthetic proxies made from those held-out images (`tripwire.detectors.proxies`)."""
    fit_x = fit_set.take(3000, seed=seed).as_float()
    held_x = held_set.take(1000, seed=seed + 1).as_float()
    if anomalies is not None:
        validation = {"given": anomalies.take(2000, seed=seed).as_float()}
    else:
        validation = make_proxies(held_x, seed=seed)
    candidates = candidate_layers(model, fit_x, pooling)
    return choose_layer(
        model,
        fit_x,
        held_x,
        validation,
        candidates,
        num_classes=num_classes,
        nu=nu,
        gamma=gamma,
        pooling=pooling,
        aggregate=aggregate,
    )
