"""Omniglot (Lake, Salakhutdinov & Tenenbaum 2015): handwritten characters of 50 alphabets,
105×105 binary PNGs, resized here to 28×28 — an OOD set for MNIST models.

Two named variants, so nobody mixes them up:

* ``omniglot`` — **as distributed**: black strokes on white. A far-OOD set for MNIST, and the
  paper's apparent protocol (an independent reproduction reached its 99.99 % AUROC only this way).
* ``omniglot-inverted`` — white strokes on black, MNIST's polarity: a much harder near-OOD set.
  Pixel for pixel ``255 - omniglot``.

Read from the official zips in ``<data dir>/omniglot/``: split ``test`` is
``images_background_small1.zip`` (5 alphabets, 2,720 images); ``small2``, ``background`` and
``evaluation`` are ``images_background_small2.zip``, ``images_background.zip`` and
``images_evaluation.zip`` for users who have them. Resizing 105→28 uses Pillow ``BILINEAR``
(antialiased when shrinking, see `tripwire.data.imagefiles`) on the 8-bit grey image. Labels are
the character index: the (alphabet, character) folders of the zip in sorted order.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tripwire.data.base import ImageSet, Source, register_source
from tripwire.data.imagefiles import RESAMPLE_NAME, decode, open_zip, read_member, resize, to_array
from tripwire.errors import DataError
from tripwire.progress import track

FOLDER = "omniglot"
ZIPS = {
    "test": "images_background_small1.zip",
    "small2": "images_background_small2.zip",
    "background": "images_background.zip",
    "evaluation": "images_evaluation.zip",
}
SIZE = (28, 28)


def read_omniglot_zip(path: Path, size: tuple[int, int] = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Images (N×H×W uint8, black on white, as distributed) and character labels of an Omniglot zip.

    Examples:
        >>> x, y = read_omniglot_zip(Path("data/omniglot/images_background_small1.zip"))
        >>> x.shape, int(y.max()) + 1
        ((2720, 28, 28), 136)
    """
    with open_zip(path, "Omniglot") as archive:
        members = sorted(
            m for m in archive.namelist() if m.lower().endswith(".png") and m.count("/") >= 2
        )
        if not members:
            raise DataError(f"Omniglot: {path} holds no PNG images in <alphabet>/<character>/")
        characters = sorted({tuple(m.split("/")[-3:-1]) for m in members})
        index = {c: i for i, c in enumerate(characters)}
        x = np.empty((len(members), *size), dtype=np.uint8)
        y = np.empty(len(members), dtype=np.int64)
        for i, m in enumerate(track(members, f"reading {path.name}")):
            img = decode(read_member(archive, m, str(path)), f"{path}:{m}", mode="L")
            x[i] = to_array(resize(img, size))
            y[i] = index[tuple(m.split("/")[-3:-1])]
    return x, y


def _loader(inverted: bool):
    def load(split: str, data_dir: Path) -> ImageSet:
        path = data_dir / FOLDER / ZIPS[split]
        x, y = read_omniglot_zip(path)
        if inverted:
            x = 255 - x
        variant = "inverted (white on black)" if inverted else "as distributed (black on white)"
        name = f"omniglot{'-inverted' if inverted else ''}-{split}"
        info: dict[str, object] = {
            "source": "Omniglot",
            "file": str(path),
            "variant": variant,
            "resize": f"105×105 → 28×28, {RESAMPLE_NAME}",
            "n_characters": int(y.max()) + 1,
        }
        return ImageSet(name, torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y), info)

    return load


_ORIGIN = (
    "official zips in <data dir>/omniglot/ (test = images_background_small1.zip; small2, "
    "background, evaluation = the other official zips), resized 105→28 with PIL BILINEAR"
)
_FILES = {split: ((f"{FOLDER}/{z}",),) for split, z in ZIPS.items()}
_SIZES = {"test": 2_720, "background": 19_280, "evaluation": 13_180}

OMNIGLOT = register_source(
    Source(
        name="omniglot",
        description="Omniglot characters as distributed: black on white, 28×28 "
        "(far-OOD for MNIST; the paper's apparent protocol)",
        origin=_ORIGIN,
        splits=tuple(ZIPS),
        image_shape=(1, 28, 28),
        loader=_loader(inverted=False),
        sizes=_SIZES,
        files=_FILES,
    )
)
OMNIGLOT_INVERTED = register_source(
    replace(
        OMNIGLOT,
        name="omniglot-inverted",
        description="Omniglot characters inverted to MNIST's white on black, 28×28 "
        "(near-OOD for MNIST)",
        loader=_loader(inverted=True),
    )
)
