"""A synthetic segmentation data set built from MNIST: digits pasted on a larger black canvas,
with a per-pixel class mask (10 digit classes + background).

Each canvas (default 64×64) holds 1–3 digits at seeded random positions; a pixel belongs to a
digit where that digit's stroke intensity is ≥ `threshold`, later digits drawn over earlier ones
(images combine by maximum); every other pixel is `BACKGROUND` (= 10).

Examples:
    >>> digits = torch.rand(20, 1, 28, 28); labels = torch.arange(20) % 10
    >>> s = make_canvas_set(digits, labels, n=4, seed=0)
    >>> s.images.shape, s.masks.shape, int(s.masks.max()) <= BACKGROUND
    (torch.Size([4, 1, 64, 64]), torch.Size([4, 64, 64]), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tripwire.data.base import ImageSet, load_source, to_float
from tripwire.errors import DataError

BACKGROUND = 10
NUM_CLASSES = 11


@dataclass
class SegmentationSet:
    """Images N×1×H×W float32 in [0, 1] and their class masks N×H×W int64."""

    name: str
    images: torch.Tensor
    masks: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.masks.shape != (
            self.images.shape[0],
            *self.images.shape[2:],
        ):
            raise DataError(
                f"{self.name}: images N×C×H×W and masks N×H×W must match, got "
                f"{tuple(self.images.shape)} and {tuple(self.masks.shape)}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def as_image_set(self) -> ImageSet:
        """The images alone (labels: the majority class of each mask), e.g. for detectors."""
        labels = torch.mode(self.masks.flatten(1), dim=1).values
        return ImageSet(self.name, self.images, labels)

    def subset(self, index: slice | torch.Tensor) -> SegmentationSet:
        """The canvases at `index`."""
        return SegmentationSet(self.name, self.images[index], self.masks[index])


def make_canvas_set(
    digits: torch.Tensor,
    labels: torch.Tensor,
    n: int,
    *,
    size: int = 64,
    max_digits: int = 3,
    threshold: float = 0.3,
    seed: int = 0,
    name: str = "mnist-canvas",
) -> SegmentationSet:
    """`n` canvases of `size`×`size` with 1…`max_digits` digits drawn from `digits` (N×1×h×w)."""
    if digits.ndim != 4 or digits.shape[1] != 1 or len(digits) != len(labels) or len(digits) == 0:
        raise DataError("digits must be a non-empty N×1×h×w set with one label each")
    h, w = digits.shape[2:]
    if size < max(h, w):
        raise DataError(f"canvas size {size} is smaller than a digit ({h}×{w})")
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, size, size)
    masks = torch.full((n, size, size), BACKGROUND, dtype=torch.int64)
    counts = torch.randint(1, max_digits + 1, (n,), generator=g)
    for i in range(n):
        for _ in range(int(counts[i])):
            j = int(torch.randint(len(digits), (1,), generator=g))
            y = int(torch.randint(size - h + 1, (1,), generator=g))
            x = int(torch.randint(size - w + 1, (1,), generator=g))
            d = to_float(digits[j, 0])
            region = images[i, 0, y : y + h, x : x + w]
            torch.maximum(region, d, out=region)
            masks[i, y : y + h, x : x + w][d >= threshold] = int(labels[j])
    return SegmentationSet(name, images, masks)


def load_canvas(
    split: str = "train",
    n: int = 4000,
    *,
    data_dir: str | Path | None = None,
    size: int = 64,
    seed: int = 0,
) -> SegmentationSet:
    """Canvases made from the MNIST `split` ("train" or "test") found in `data_dir`."""
    mnist = load_source("mnist", split, data_dir)
    assert mnist.labels is not None
    return make_canvas_set(
        mnist.images, mnist.labels, n, size=size, seed=seed, name=f"mnist-canvas-{split}"
    )
