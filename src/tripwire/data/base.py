"""The data protocol: an `ImageSet` of images in [0, 1] streamed in batches, and named sources.

Every data source returns an `ImageSet`: images N×C×H×W (stored as uint8 or float32 in [0, 1];
handed out as float32 in [0, 1]) with optional int64 labels. Large sets are kept as uint8 and
converted one batch at a time, so nothing holds a float copy of a whole data set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tripwire.batching import batch_slices
from tripwire.errors import DataError, InvalidInputError
from tripwire.registry import Registry


@dataclass(frozen=True)
class ImageSet:
    """A named set of images with optional labels.

    Attributes:
        name: what the set is, e.g. ``"mnist-test"``.
        images: N×C×H×W, uint8 (0…255) or float32 in [0, 1].
        labels: int64 of shape (N,), or None for unlabelled sets.
        info: free-form provenance (source, split, variant, …), JSON-serialisable.

    Examples:
        >>> s = ImageSet("toy", torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.arange(4))
        >>> [b.shape for b in s.batches(3)]
        [torch.Size([3, 1, 8, 8]), torch.Size([1, 1, 8, 8])]
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor | None = None
    info: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise DataError(
                f"{self.name}: images must be N×C×H×W, got shape {tuple(self.images.shape)}"
            )
        if self.images.dtype not in (torch.uint8, torch.float32):
            raise DataError(
                f"{self.name}: images must be uint8 or float32, got {self.images.dtype}"
            )
        if self.labels is not None and (
            self.labels.dtype != torch.int64 or self.labels.shape != (len(self.images),)
        ):
            raise DataError(
                f"{self.name}: labels must be int64 of shape ({len(self.images)},), "
                f"got {self.labels.dtype} {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def as_float(self, index: slice | torch.Tensor | None = None) -> torch.Tensor:
        """Images (all, or the given index) as float32 in [0, 1]."""
        x = self.images if index is None else self.images[index]
        return to_float(x)

    def batches(self, batch_size: int = 256) -> Iterator[torch.Tensor]:
        """Float32 batches in [0, 1], in order."""
        for s in batch_slices(len(self), batch_size):
            yield self.as_float(s)

    def labelled_batches(
        self, batch_size: int = 256
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) batches, in order. Raises DataError for unlabelled sets."""
        labels = self.require_labels()
        for s in batch_slices(len(self), batch_size):
            yield self.as_float(s), labels[s]

    def require_labels(self) -> torch.Tensor:
        """The labels, or a DataError naming the set when it has none."""
        if self.labels is None:
            raise DataError(f"{self.name}: this set has no labels")
        return self.labels

    def subset(self, index: torch.Tensor | slice, name: str | None = None) -> ImageSet:
        """The images (and labels) at `index`."""
        labels = None if self.labels is None else self.labels[index]
        return ImageSet(name or self.name, self.images[index], labels, dict(self.info))

    def take(self, n: int, seed: int = 0) -> ImageSet:
        """A seeded random subset of `n` images (all of them, shuffled, if n ≥ len)."""
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[: min(n, len(self))]
        return self.subset(idx)

    def split(self, fraction: float, seed: int = 0) -> tuple[ImageSet, ImageSet]:
        """A seeded random split into (the rest, `fraction` of the images)."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)
        n_held = max(1, round(fraction * len(self)))
        return (
            self.subset(idx[n_held:], f"{self.name}[rest]"),
            self.subset(idx[:n_held], f"{self.name}[held-out]"),
        )


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 0…255 → float32 0…1; float tensors pass through as float32."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x.to(torch.float32)


def check_images(
    x: object, image_shape: tuple[int, ...] | None = None, what: str = "images"
) -> torch.Tensor:
    """A batch of images as a finite float tensor N×C×H×W in [0, 1], N ≥ 1 (uint8 0…255 is
    divided by 255; other float dtypes are kept), of C×H×W = `image_shape` where given.

    Raises:
        InvalidInputError: saying what is wrong (type, shape, channels, size, NaN/inf, range);
            `what` names the input in the message.
    """
    if not isinstance(x, torch.Tensor):
        raise InvalidInputError(f"{what}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise InvalidInputError(f"{what}: expected N×C×H×W, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise InvalidInputError(f"{what}: empty batch, no images")
    if x.dtype == torch.uint8:
        x = to_float(x)
    if not x.is_floating_point():
        raise InvalidInputError(f"{what}: expected float in [0, 1] or uint8, got {x.dtype}")
    if image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape):
        c, h, w = image_shape
        raise InvalidInputError(
            f"{what}: expected {c} channel(s) and size {h}×{w} (N×{c}×{h}×{w}), "
            f"got N×{'×'.join(str(s) for s in x.shape[1:])}"
        )
    lo_t, hi_t = torch.aminmax(x)  # one pass; NaN propagates into both
    lo, hi = float(lo_t), float(hi_t)
    if not (lo >= -1e-6 and hi <= 1 + 1e-6):
        if not bool(torch.isfinite(x).all()):
            raise InvalidInputError(f"{what}: NaN or infinite values")
        raise InvalidInputError(f"{what}: must lie in [0, 1], found values in [{lo:.4g}, {hi:.4g}]")
    return x


def from_numpy_images(array: np.ndarray, origin: str) -> torch.Tensor:
    """Turn an N×H×W or N×H×W×C (or N×C×H×W) array into an N×C×H×W uint8/float32 tensor.

    uint8 arrays stay uint8; float arrays must lie in [0, 1]. `origin` names the file in errors.
    """
    if array.ndim == 3:
        array = array[:, None, :, :]
    elif array.ndim == 4:
        if array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
            array = array.transpose(0, 3, 1, 2)
    else:
        raise DataError(
            f"{origin}: images must be N×H×W or N×H×W×C, got an array of shape {array.shape}"
        )
    if array.shape[0] == 0:
        raise DataError(f"{origin}: contains no images")
    if array.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(array))
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise DataError(f"{origin}: images contain NaN or infinite values")
        lo, hi = float(array.min()), float(array.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"{origin}: float images must lie in [0, 1], found values in [{lo:.3g}, {hi:.3g}] "
                "(store uint8 0…255, or divide by 255)"
            )
        return torch.from_numpy(np.ascontiguousarray(array))
    raise DataError(f"{origin}: images must be uint8 or float in [0, 1], got dtype {array.dtype}")


Loader = Callable[[str, Path], ImageSet]


@dataclass(frozen=True)
class Source:
    """A named data source: how to load each split, and where the data comes from."""

    name: str
    description: str
    origin: str
    splits: tuple[str, ...]
    image_shape: tuple[int, int, int]
    loader: Loader
    needs_files: bool = True
    sizes: dict[str, int] = field(default_factory=dict)
    # Per split: alternative sets of files (relative to the data directory); the split loads
    # without a download when every file of one alternative is present.
    files: Mapping[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)

    def files_present(self, split: str, data_dir: str | Path | None = None) -> bool | None:
        """Whether `split` can load from `data_dir` as it is: True/False, None when unknown.

        Sources that need no files are always present.
        """
        from tripwire.paths import data_dir as resolve_data_dir

        if not self.needs_files:
            return True
        alternatives = self.files.get("test" if split in TEST_HALVES else split)
        if not alternatives:
            return None
        root = resolve_data_dir(data_dir)
        return any(all((root / f).exists() for f in alt) for alt in alternatives)

    def load(self, split: str | None = None, data_dir: str | Path | None = None) -> ImageSet:
        """Load one split (default: the first listed, usually "test")."""
        from tripwire.paths import data_dir as resolve_data_dir

        split = split or self.splits[0]
        if split in TEST_HALVES and "test" in self.splits:
            validation, evaluation = halve_test_split(
                self.loader("test", resolve_data_dir(data_dir))
            )
            return validation if split == "validation" else evaluation
        if split not in self.splits:
            available = [*self.splits, *(TEST_HALVES if "test" in self.splits else ())]
            raise DataError(f"{self.name}: no split {split!r}; available: {', '.join(available)}")
        return self.loader(split, resolve_data_dir(data_dir))


# The two fixed halves of every source's test split (see `halve_test_split`).
TEST_HALVES = ("validation", "evaluation")
TEST_HALVES_SEED = 20261203


def halve_test_split(test: ImageSet) -> tuple[ImageSet, ImageSet]:
    """(validation, evaluation): a source's test images cut once into two fixed halves.

    Detectors need in-distribution images the model never trained on for their thresholds and
    normalisation constants; the zoo models train on their whole training split, so the images
    they have not seen are the test images. The *validation* half sets thresholds (and is where
    detector settings may be chosen); the *evaluation* half is the only one the benchmark reports
    score — as OpenOOD keeps an ID validation split apart from its ID test split. The cut is a
    seeded permutation (seed `TEST_HALVES_SEED`), the same on every machine and in every run;
    ``load_source(name, "validation")`` and ``load_source(name, "evaluation")`` load the halves.
    """
    evaluation, validation = test.split(0.5, seed=TEST_HALVES_SEED)
    return (
        validation.subset(slice(None), f"{test.name}[validation]"),
        evaluation.subset(slice(None), f"{test.name}[evaluation]"),
    )


_SOURCES: Registry[Source] = Registry("data source", DataError)


def register_source(source: Source) -> Source:
    """Add a source to the registry that `tripwire data list` and `load_source` use."""
    return _SOURCES.add(source.name, source)


def get_source(name: str) -> Source:
    """The registered source called `name`."""
    return _SOURCES.lookup(name)


def list_sources() -> list[Source]:
    """All registered sources, sorted by name."""
    return [_SOURCES[k] for k in _SOURCES.names()]


def load_source(
    name: str, split: str | None = None, data_dir: str | Path | None = None
) -> ImageSet:
    """Load split `split` of the registered source `name` from `data_dir`.

    Examples:
        >>> digits = load_source("digits8", "train")  # needs no files
    """
    return get_source(name).load(split, data_dir)
