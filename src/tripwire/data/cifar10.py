"""CIFAR-10 (Krizhevsky 2009): 32×32 RGB photos, 10 classes, 50,000 train / 10,000 test — the
in-distribution set of the paper's ResNet/VGG settings.

Read from ``<data dir>/cifar10/``, the first of these that is present:

1. the **official binary version** (lossless): the folder ``cifar-10-batches-bin/`` or the archive
   ``cifar-10-binary.tar.gz`` (``data_batch_1…5.bin``, ``test_batch.bin``: one label byte, then
   1,024 R, G and B bytes per image);
2. ``cifar10_jpeg.zip``: ``cifar10/{train,test}/<class>/NNNN.jpg``, class order airplane,
   automobile, bird, cat, deer, dog, frog, horse, ship, truck = 0…9. **JPEG at about quality 75 —
   lossy, not bit-identical to the official pixels**; ``info["lossy"]`` says so;
3. else the binary archive is downloaded from the canonical URL (MD5-checked).

The official *python* version of the batches is a pickle, which tripwire refuses to load; use the
binary version. Decoding the 50,000 training JPEGs takes ~10 s on one core, so the decoded uint8
arrays are cached in ``<cache dir>/data`` (see `tripwire.data.cache`).
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import torch

from tripwire.data.base import ImageSet, Source, register_source
from tripwire.data.cache import cached_arrays
from tripwire.data.idx import fetch
from tripwire.data.imagefiles import open_zip, read_zip_images
from tripwire.errors import DataError

FOLDER = "cifar10"
JPEG_ZIP = "cifar10_jpeg.zip"
BIN_DIR = "cifar-10-batches-bin"
BIN_TAR = "cifar-10-binary.tar.gz"
BIN_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
BATCHES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}
CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_RECORD = 1 + 3 * 32 * 32


def parse_binary_batch(data: bytes, origin: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N×32×32×3 uint8) and labels of one official binary CIFAR-10 batch."""
    if len(data) == 0 or len(data) % _RECORD:
        raise DataError(
            f"{origin}: {len(data)} bytes is not a whole number of {_RECORD}-byte CIFAR records"
        )
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, _RECORD)
    labels = rows[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(f"{origin}: label {labels.max()} out of range 0…9; not a CIFAR-10 batch")
    images = rows[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _read_binary(split: str, folder: Path) -> tuple[np.ndarray, np.ndarray, str]:
    parts = []
    if (folder / BIN_DIR).is_dir():
        for b in BATCHES[split]:
            p = folder / BIN_DIR / b
            if not p.exists():
                raise DataError(f"CIFAR-10: {p} is missing from {folder / BIN_DIR}")
            parts.append(parse_binary_batch(p.read_bytes(), str(p)))
        origin = str(folder / BIN_DIR)
    else:
        tar = fetch(folder, BIN_TAR, BIN_MD5, MIRRORS, "CIFAR-10")
        try:
            with tarfile.open(tar, "r:*") as t:
                for b in BATCHES[split]:
                    f = t.extractfile(f"{BIN_DIR}/{b}")
                    if f is None:
                        raise KeyError(b)
                    parts.append(parse_binary_batch(f.read(), f"{tar}:{b}"))
        except (tarfile.TarError, OSError, EOFError, KeyError) as e:
            raise DataError(f"CIFAR-10: {tar} is corrupt or incomplete ({e})") from None
        origin = str(tar)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), origin


def _read_jpeg_zip(split: str, path: Path) -> dict[str, np.ndarray]:
    prefix = f"cifar10/{split}/"
    with open_zip(path, "CIFAR-10") as archive:
        members = sorted(
            m for m in archive.namelist() if m.startswith(prefix) and m.lower().endswith(".jpg")
        )
        if not members:
            raise DataError(f"CIFAR-10: {path} holds no images under {prefix}")
        labels = []
        for m in members:
            cls = m[len(prefix) :].split("/")[0]
            if cls not in CLASSES:
                raise DataError(f"CIFAR-10: {path}:{m}: unknown class folder {cls!r}")
            labels.append(CLASSES.index(cls))
        x = read_zip_images(archive, members, str(path), "RGB", None, f"decoding CIFAR-10 {split}")
    if x.shape[1:] != (32, 32, 3):
        raise DataError(f"CIFAR-10: {path}: images are {x.shape[1:]}, expected 32×32×3")
    return {"x": x, "y": np.asarray(labels, dtype=np.int64)}


def _load(split: str, data_dir: Path) -> ImageSet:
    folder = data_dir / FOLDER
    info: dict[str, object] = {"source": "CIFAR-10", "classes": list(CLASSES)}
    zip_path = folder / JPEG_ZIP
    if not (folder / BIN_DIR).is_dir() and not (folder / BIN_TAR).exists() and zip_path.exists():
        arrays = cached_arrays(
            "cifar10-jpeg", zip_path, f"{split}-v1", lambda: _read_jpeg_zip(split, zip_path)
        )
        x, y = arrays["x"], arrays["y"]
        info |= {
            "file": str(zip_path),
            "lossy": "JPEG at about quality 75: not bit-identical to the official pixels",
        }
    else:
        try:
            x, y, origin = _read_binary(split, folder)
        except DataError as e:
            raise DataError(f"{e}\nAlternatively put {JPEG_ZIP} into {folder}.") from None
        info |= {"file": origin, "lossy": False}
    images = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    return ImageSet(f"cifar10-{split}", images, torch.from_numpy(y), info)


CIFAR10 = register_source(
    Source(
        name="cifar10",
        description="CIFAR-10 photos, 32×32 RGB, 10 classes (in-distribution for ResNet/VGG); "
        "lossy JPEG when read from cifar10_jpeg.zip",
        origin="<data dir>/cifar10/: official binary batches (cifar-10-batches-bin/ or "
        "cifar-10-binary.tar.gz, downloaded when missing), else cifar10_jpeg.zip (JPEG q≈75)",
        splits=("test", "train"),
        image_shape=(3, 32, 32),
        loader=_load,
        sizes={"test": 10_000, "train": 50_000},
        files={
            split: (
                (f"{FOLDER}/{JPEG_ZIP}",),
                (f"{FOLDER}/{BIN_TAR}",),
                tuple(f"{FOLDER}/{BIN_DIR}/{b}" for b in BATCHES[split]),
            )
            for split in ("test", "train")
        },
    )
)
