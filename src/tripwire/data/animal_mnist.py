"""Animal-MNIST: 10,000 white-on-black 28×28 animal silhouettes, 10 classes × 1,000 (the PyPI
package ``animal-mnist`` 0.4, converted to ``.npz``). An extra OOD set for MNIST models, read from
``<data dir>/animal_mnist/animal_mnist.npz`` (``x`` uint8 N×28×28, ``y`` int64)."""

from __future__ import annotations

from pathlib import Path

from tripwire.data.base import ImageSet, Source, register_source
from tripwire.data.npzfile import load_npz_set

FILE = Path("animal_mnist") / "animal_mnist.npz"


def _load(split: str, data_dir: Path) -> ImageSet:
    return load_npz_set(data_dir / FILE, "animal-mnist-test", "Animal-MNIST")


ANIMAL_MNIST = register_source(
    Source(
        name="animal-mnist",
        description="Animal-MNIST silhouettes, 28×28 white on black, 10 classes (OOD for MNIST)",
        origin="<data dir>/animal_mnist/animal_mnist.npz (PyPI package animal-mnist 0.4)",
        splits=("test",),
        image_shape=(1, 28, 28),
        loader=_load,
        sizes={"test": 10_000},
        files={"test": ((str(FILE),),)},
    )
)
