"""scikit-learn's 8×8 handwritten digits (the UCI "Optical Recognition of Handwritten Digits" test
set, Alpaydin & Kaynak 1998): 1,797 images, values 0…16 scaled to [0, 1]. Bundled with
scikit-learn, so it needs no download — the embedded default of ``tripwire demo``.

* ``digits8`` — 1×8×8, a fixed stratified split: 1,347 train / 450 test (seed 0).
* ``digits8-28`` — the same images upscaled to MNIST's layout, a near-OOD set for MNIST models:
  8×8 → 20×20 (bilinear, ``align_corners=False``) centred in a 28×28 black frame, as MNIST centres
  its digits in a 20×20 box.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tripwire.data.base import ImageSet, Source, register_source

SPLIT_SEED = 0
N_TEST = 450


def digits8_arrays(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 images N×1×8×8 in [0, 1] and int64 labels of one split ("train", "test", "all").

    The split is stratified by class and fixed (seed 0): 1,347 train, 450 test.

    Examples:
        >>> x, y = digits8_arrays("test")
        >>> tuple(x.shape), int(y.max())
        ((450, 1, 8, 8), 9)
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy((bunch.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    if split == "all":
        return x, y
    rng = np.random.default_rng(SPLIT_SEED)
    test_idx: list[int] = []
    n = len(y)
    for c in range(10):  # stratified: each class's share of the 450 test images
        idx = np.flatnonzero(bunch.target == c)
        k = round(N_TEST * len(idx) / n)
        test_idx.extend(rng.permutation(idx)[:k].tolist())
    test = np.zeros(n, dtype=bool)
    test[np.array(test_idx[:N_TEST])] = True
    # rounding can leave the total off by one or two: fix it deterministically
    missing = N_TEST - int(test.sum())
    if missing > 0:
        test[rng.permutation(np.flatnonzero(~test))[:missing]] = True
    mask = torch.from_numpy(test if split == "test" else ~test)
    return x[mask], y[mask]


def upscale_to_mnist(x: torch.Tensor) -> torch.Tensor:
    """N×1×8×8 in [0, 1] → N×1×28×28: bilinear to 20×20, centred in a black 28×28 frame."""
    big = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    return F.pad(big, (4, 4, 4, 4))


def _load8(split: str, data_dir: Path) -> ImageSet:
    x, y = digits8_arrays(split)
    info: dict[str, object] = {"source": "sklearn.datasets.load_digits", "split_seed": SPLIT_SEED}
    return ImageSet(f"digits8-{split}", x, y, info)


def _load28(split: str, data_dir: Path) -> ImageSet:
    x, y = digits8_arrays(split)
    info: dict[str, object] = {
        "source": "sklearn.datasets.load_digits",
        "split_seed": SPLIT_SEED,
        "resize": "8×8 → 20×20 bilinear, centred in 28×28",
    }
    return ImageSet(f"digits8-28-{split}", upscale_to_mnist(x), y, info)


_ORIGIN = "scikit-learn's bundled load_digits() (no download)"

DIGITS8 = register_source(
    Source(
        name="digits8",
        description="scikit-learn 8×8 digits, 1×8×8 in [0, 1], 10 classes (demo default)",
        origin=_ORIGIN,
        splits=("test", "train"),
        image_shape=(1, 8, 8),
        loader=_load8,
        needs_files=False,
        sizes={"test": N_TEST, "train": 1797 - N_TEST},
    )
)
DIGITS8_28 = register_source(
    Source(
        name="digits8-28",
        description="scikit-learn 8×8 digits upscaled to 28×28 in MNIST's layout "
        "(near-OOD for MNIST)",
        origin=_ORIGIN + ", upscaled",
        splits=("test", "train"),
        image_shape=(1, 28, 28),
        loader=_load28,
        needs_files=False,
        sizes={"test": N_TEST, "train": 1797 - N_TEST},
    )
)
