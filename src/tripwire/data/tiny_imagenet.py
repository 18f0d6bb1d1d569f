"""Tiny ImageNet (resize) and (crop): the OOD sets of ODIN (Liang, Li & Srikant 2018) that the
paper calls "TinyIm", **rebuilt** here from the 10,000 Tiny ImageNet test images (64×64 JPEG,
189 of them grey, unlabelled) in ``<data dir>/tiny_imagenet/tiny_imagenet_test_jpeg.zip``.

* ``tinyimagenet-resize`` — each image downsized 64→32 with Pillow ``BILINEAR`` (antialiased).
* ``tinyimagenet-crop`` — a random 32×32 crop of each, offsets drawn from
  ``numpy.random.default_rng(0)`` (uniform in 0…32) and stored in ``info["crop_offsets"]`` as
  (top, left) pairs.

Images are read in the order test_0 … test_9999; grey images are replicated to RGB. These are
rebuilds, not ODIN's released files; say so when reporting results on them. Users who have ODIN's
released folders can load them with `tripwire.data.load_image_folder`.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tripwire.data.base import ImageSet, Source, register_source
from tripwire.data.imagefiles import RESAMPLE_NAME, open_zip, read_zip_images
from tripwire.errors import DataError

FILE = Path("tiny_imagenet") / "tiny_imagenet_test_jpeg.zip"
CROP_SEED = 0
SIZE = 32


def _number(member: str) -> int:
    m = re.search(r"(\d+)\.jpe?g$", member, re.IGNORECASE)
    return int(m.group(1)) if m else -1


def read_tiny_imagenet_test(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """The Tiny ImageNet test images of the zip at `path`, N×64×64×3 uint8 in numeric order
    (resized to `size` = (height, width) with the fixed filter when given).

    Examples:
        >>> read_tiny_imagenet_test(Path("data/tiny_imagenet/tiny_imagenet_test_jpeg.zip")).shape
        (10000, 64, 64, 3)
    """
    with open_zip(path, "Tiny ImageNet") as archive:
        members = [m for m in archive.namelist() if re.search(r"\.jpe?g$", m, re.IGNORECASE)]
        if not members:
            raise DataError(f"Tiny ImageNet: {path} holds no JPEG images")
        members.sort(key=lambda m: (_number(m), m))
        return read_zip_images(archive, members, str(path), "RGB", size, "decoding Tiny ImageNet")


def crop_offsets(
    n: int, height: int, width: int, size: int = SIZE, seed: int = CROP_SEED
) -> np.ndarray:
    """Seeded (top, left) offsets of a `size`×`size` crop in each of `n` images."""
    rng = np.random.default_rng(seed)
    tops = rng.integers(0, height - size + 1, size=n)
    lefts = rng.integers(0, width - size + 1, size=n)
    return np.stack([tops, lefts], axis=1)


def _load_resize(split: str, data_dir: Path) -> ImageSet:
    path = data_dir / FILE
    small = read_tiny_imagenet_test(path, (SIZE, SIZE))
    info: dict[str, object] = {
        "source": "Tiny ImageNet test set (rebuild of ODIN's TinyImageNet (resize))",
        "file": str(path),
        "resize": f"64×64 → 32×32, {RESAMPLE_NAME}",
        "lossy": "JPEG source images",
    }
    return ImageSet("tinyimagenet-resize", _to_tensor(small), None, info)


def _load_crop(split: str, data_dir: Path) -> ImageSet:
    path = data_dir / FILE
    full = read_tiny_imagenet_test(path)
    n, h, w = full.shape[:3]
    offsets = crop_offsets(n, h, w)
    crops = np.stack([full[i, t : t + SIZE, u : u + SIZE] for i, (t, u) in enumerate(offsets)])
    info: dict[str, object] = {
        "source": "Tiny ImageNet test set (rebuild of ODIN's TinyImageNet (crop))",
        "file": str(path),
        "crop_seed": CROP_SEED,
        "crop_offsets": offsets.tolist(),
        "lossy": "JPEG source images",
    }
    return ImageSet("tinyimagenet-crop", _to_tensor(crops), None, info)


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


_ORIGIN = "<data dir>/tiny_imagenet/tiny_imagenet_test_jpeg.zip (Tiny ImageNet test, 64×64 JPEG)"
_FILES = {"test": ((str(FILE),),)}

TINY_RESIZE = register_source(
    Source(
        name="tinyimagenet-resize",
        description="Tiny ImageNet test images downsized to 32×32 RGB, rebuild of ODIN's "
        "TinyImageNet (resize) (OOD for CIFAR-10)",
        origin=_ORIGIN,
        splits=("test",),
        image_shape=(3, SIZE, SIZE),
        loader=_load_resize,
        sizes={"test": 10_000},
        files=_FILES,
    )
)
TINY_CROP = register_source(
    replace(
        TINY_RESIZE,
        name="tinyimagenet-crop",
        description="seeded random 32×32 crops of the Tiny ImageNet test images, rebuild of "
        "ODIN's TinyImageNet (crop) (OOD for CIFAR-10)",
        loader=_load_crop,
    )
)
