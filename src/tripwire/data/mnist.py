"""MNIST (LeCun, Cortes & Burges): 60,000 training and 10,000 test digits, 28×28 grey, from the
standard IDX files in `<data dir>/mnist/`, downloaded from the canonical mirrors when missing."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from tripwire.data.base import ImageSet, Source, register_source
from tripwire.data.idx import fetch, read_idx
from tripwire.errors import DataError

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# MD5 of the canonical gzipped files (as torchvision checks them).
FILES = {
    "train": (
        ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    ),
    "test": (
        ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    ),
}


def load_idx_pair(
    folder: Path,
    files: tuple[tuple[str, str], tuple[str, str]],
    mirrors: tuple[str, ...],
    name: str,
    dataset: str,
) -> ImageSet:
    """Load an (images, labels) pair of IDX files into an ImageSet of N×1×H×W uint8 images."""
    (img_file, img_md5), (lbl_file, lbl_md5) = files
    try:
        img_path = fetch(folder, img_file, img_md5, mirrors, dataset)
        lbl_path = fetch(folder, lbl_file, lbl_md5, mirrors, dataset)
    except DataError as e:
        raise DataError(f"{e}\n{name} needs both {img_file} and {lbl_file} in {folder}.") from None
    images = read_idx(img_path)
    labels = read_idx(lbl_path)
    if images.ndim != 3 or images.dtype != "uint8":
        raise DataError(f"{folder / img_file}: expected N×H×W uint8 images, got {images.shape}")
    if labels.shape != (images.shape[0],):
        raise DataError(
            f"{folder / lbl_file}: {labels.shape[0]} labels for {images.shape[0]} images"
        )
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    y = torch.from_numpy(labels.astype("int64"))
    return ImageSet(name, x, y, {"source": dataset, "folder": str(folder)})


def idx_files(
    folder: str, files: Mapping[str, tuple[tuple[str, str], ...]]
) -> dict[str, tuple[tuple[str, ...], ...]]:
    """`Source.files` for gzipped IDX files (each may also be present un-gzipped)."""
    return {
        split: (
            tuple(f"{folder}/{name}" for name, _ in pair),
            tuple(f"{folder}/{name.removesuffix('.gz')}" for name, _ in pair),
        )
        for split, pair in files.items()
    }


def _load(split: str, data_dir: Path) -> ImageSet:
    return load_idx_pair(data_dir / "mnist", FILES[split], MIRRORS, f"mnist-{split}", "MNIST")


MNIST = register_source(
    Source(
        name="mnist",
        description="MNIST handwritten digits, 28×28 grey, 10 classes (in-distribution for LeNet)",
        origin="standard IDX files in <data dir>/mnist/ (downloaded from the canonical mirrors "
        "when missing)",
        splits=("test", "train"),
        image_shape=(1, 28, 28),
        loader=_load,
        sizes={"train": 60_000, "test": 10_000},
        files=idx_files("mnist", FILES),
    )
)
