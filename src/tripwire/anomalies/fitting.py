"""Known anomalies for the detectors that must fit on some (KD+BU, LID, fingerprints): FGSM of
*training* images, as Zhao et al. train KD+BU and LID — never a test set."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from tripwire.anomalies.cache import make_anomalies
from tripwire.data.base import ImageSet


def fgsm_of_training_images(
    model: nn.Module,
    train: ImageSet,
    n: int,
    *,
    seed: int = 0,
    eps: float = 0.3,
    cache_dir: str | Path | None = None,
) -> ImageSet:
    """Successful FGSM (ε = `eps`) examples of `n` seeded training images, labelled with the
    clean image's class.

    Examples:
        >>> adv = fgsm_of_training_images(model, mnist_train, 2000)  # doctest: +SKIP
        >>> KDBUDetector().fit(model, mnist_train, anomalies=adv)     # doctest: +SKIP
    """
    clean = train.take(n, seed=seed + 1)
    adv = make_anomalies(
        "fgsm",
        model,
        clean.as_float(),
        clean.require_labels(),
        seed=seed,
        eps=eps,
        cache_dir=cache_dir,
    ).successful()
    return ImageSet("fgsm-of-training-images", adv.images, adv.labels, {"eps": eps, "n": n})
