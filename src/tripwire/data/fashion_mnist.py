"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 28×28 grey photos of clothing, 10 classes.

An OOD set for MNIST models in the paper. Read from ``<data dir>/fashion_mnist/``: the test split
from ``fashion_mnist_test.npz`` (``x`` uint8 N×28×28, ``y`` int64) when present, else — and for
the train split — from the standard gzipped IDX files, downloaded from Zalando's canonical mirror
(MD5-checked, as torchvision does) when missing and the internet is reachable.
"""

from __future__ import annotations

from pathlib import Path

from tripwire.data.base import ImageSet, Source, register_source
from tripwire.data.mnist import idx_files, load_idx_pair
from tripwire.data.npzfile import load_npz_set
from tripwire.errors import DataError

FOLDER = "fashion_mnist"
NPZ = {"test": "fashion_mnist_test.npz"}
MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
FILES = {
    "train": (
        ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    ),
    "test": (
        ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    ),
}
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _load(split: str, data_dir: Path) -> ImageSet:
    folder = data_dir / FOLDER
    name = f"fashion-mnist-{split}"
    npz = folder / NPZ[split] if split in NPZ else None
    if npz is not None and npz.exists():
        s = load_npz_set(npz, name, "Fashion-MNIST")
    else:
        try:
            s = load_idx_pair(folder, FILES[split], MIRRORS, name, "Fashion-MNIST")
        except DataError as e:
            if npz is None:
                raise
            raise DataError(
                f"{e}\nAlternatively put {npz.name} (x, y arrays) into {folder}."
            ) from None
    s.info["classes"] = list(CLASSES)
    return s


FASHION_MNIST = register_source(
    Source(
        name="fashion-mnist",
        description="Fashion-MNIST clothing photos, 28×28 grey, 10 classes (OOD for MNIST)",
        origin="<data dir>/fashion_mnist/fashion_mnist_test.npz, else the standard IDX files "
        "there (downloaded from fashion-mnist.s3-website.eu-central-1.amazonaws.com when missing)",
        splits=("test", "train"),
        image_shape=(1, 28, 28),
        loader=_load,
        sizes={"test": 10_000, "train": 60_000},
        files={
            "test": ((f"{FOLDER}/{NPZ['test']}",), *idx_files(FOLDER, FILES)["test"]),
            "train": idx_files(FOLDER, FILES)["train"],
        },
    )
)
