"""Seeded crops of the photographs bundled with scikit-image — natural-image OOD and validation
sets that need no download.

``photo-crops`` is grey 1×28×28 (for MNIST models), ``photo-crops-rgb`` RGB 3×32×32 (for CIFAR-10
models). Each image draws, from a seeded ``numpy.random.Generator``: one of the photographs in
`PHOTOS`, a square crop whose side is 10–60 % of the photo's shorter side (at least the output
size), and its position. The crop is shrunk with Pillow ``BILINEAR`` (antialiased); colour photos
become grey by ITU-R 601-2 luma (Pillow's ``convert("L")``), grey photos become RGB by
replication. Same seed → the same images, bit for bit.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tripwire.data.base import ImageSet, Source, register_source
from tripwire.data.imagefiles import RESAMPLE

# skimage.data functions that read files shipped inside the scikit-image wheel (no pooch fetch).
PHOTOS = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "coins",
    "moon",
    "page",
    "clock",
    "horse",
    "brick",
    "grass",
    "gravel",
    "text",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "cell",
)
SPLIT_SEEDS = {"test": 0, "train": 1}
N_PER_SPLIT = 5_000


@cache
def _photo(name: str, mode: str) -> Image.Image:
    import skimage.data

    a = np.asarray(getattr(skimage.data, name)())
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)
    img = Image.fromarray(a[..., :3] if a.ndim == 3 else a)
    return img.convert(mode)


def crop_photos(
    n: int, seed: int = 0, size: int = 28, channels: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """`n` seeded square crops of the bundled photographs, shrunk to `size`×`size`.

    Returns images (N×size×size uint8 for ``channels=1``, N×size×size×3 for ``channels=3``) and
    the index into `PHOTOS` of the photograph each crop comes from.

    Examples:
        >>> x, which = crop_photos(4, seed=0, size=32, channels=3)
        >>> x.shape
        (4, 32, 32, 3)
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    mode = "L" if channels == 1 else "RGB"
    rng = np.random.default_rng(seed)
    which = rng.integers(len(PHOTOS), size=n)
    frac = rng.uniform(0.1, 0.6, size=n)
    pos = rng.uniform(0.0, 1.0, size=(n, 2))
    shape = (n, size, size) if channels == 1 else (n, size, size, 3)
    x = np.empty(shape, dtype=np.uint8)
    for i in range(n):
        photo = _photo(PHOTOS[which[i]], mode)
        w, h = photo.size
        side = int(min(max(size, round(frac[i] * min(w, h))), w, h))
        left = int(pos[i, 0] * (w - side))
        top = int(pos[i, 1] * (h - side))
        crop = photo.resize((size, size), RESAMPLE, box=(left, top, left + side, top + side))
        x[i] = np.asarray(crop, dtype=np.uint8)
    return x, which.astype(np.int64)


def _loader(size: int, channels: int, tag: str):
    def load(split: str, data_dir: Path) -> ImageSet:
        seed = SPLIT_SEEDS[split]
        x, which = crop_photos(N_PER_SPLIT, seed, size, channels)
        t = torch.from_numpy(x)
        t = t.unsqueeze(1) if channels == 1 else t.permute(0, 3, 1, 2).contiguous()
        info: dict[str, object] = {
            "source": "crops of scikit-image's bundled photographs",
            "seed": seed,
            "photos": list(PHOTOS),
            "photo_index": which.tolist(),
        }
        return ImageSet(f"{tag}-{split}", t, None, info)

    return load


_ORIGIN = "generated: seeded crops of skimage.data photographs (no download)"

PHOTO_CROPS = register_source(
    Source(
        name="photo-crops",
        description="crops of scikit-image's photographs, 28×28 grey (natural-image anomalies "
        "for MNIST)",
        origin=_ORIGIN,
        splits=tuple(SPLIT_SEEDS),
        image_shape=(1, 28, 28),
        loader=_loader(28, 1, "photo-crops"),
        needs_files=False,
        sizes=dict.fromkeys(SPLIT_SEEDS, N_PER_SPLIT),
    )
)
PHOTO_CROPS_RGB = register_source(
    replace(
        PHOTO_CROPS,
        name="photo-crops-rgb",
        description="crops of scikit-image's photographs, 32×32 RGB (natural-image anomalies "
        "for CIFAR-10)",
        image_shape=(3, 32, 32),
        loader=_loader(32, 3, "photo-crops-rgb"),
    )
)
