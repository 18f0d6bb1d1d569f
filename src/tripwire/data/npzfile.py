"""Reading image arrays from ``.npz`` / ``.npy`` files safely: no pickle, and a `DataError` that
names the file and the problem for every way such a file can be wrong."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from tripwire.data.base import ImageSet, from_numpy_images
from tripwire.errors import DataError

# The image array of an .npz: "x", or "images" with labels "labels" in what `tripwire anomalies
# make` writes (`AnomalySet.save`), so that its output is input to every other command.
IMAGE_KEYS = {"x": "y", "images": "labels"}


def image_key(keys: list[str], path: Path) -> str:
    """Which of `keys` (an archive's array names) holds the images; a `DataError` if none does."""
    for key in IMAGE_KEYS:
        if key in keys:
            return key
    raise DataError(
        f"{path}: no array named 'x' (found: {', '.join(keys) or 'none'}); save the images as "
        "numpy.savez(path, x=images, y=labels)"
    )


def _open(path: Path) -> np.lib.npyio.NpzFile | np.ndarray:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected an .npz file")
    try:
        return np.load(path, allow_pickle=False)
    except zipfile.BadZipFile as e:
        raise DataError(f"{path}: corrupt .npz archive ({e})") from None
    except ValueError as e:
        if "pickle" in str(e):
            raise DataError(
                f"{path}: not an .npz/.npy file (numpy would have to unpickle it, which tripwire "
                "refuses; save arrays with numpy.savez)"
            ) from None
        raise DataError(f"{path}: cannot read as .npz/.npy ({e})") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read as .npz/.npy ({e})") from None


def _member(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as e:  # object arrays need pickle
        raise DataError(
            f"{path}: array {key!r} holds Python objects ({e}); store numbers"
        ) from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise DataError(f"{path}: array {key!r} is corrupt ({e})") from None


def read_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The raw arrays ``x`` and (if present) ``y`` of an ``.npz`` (or the one array of an ``.npy``;
    or ``images`` and ``labels`` of an anomaly set that `tripwire anomalies make` wrote).

    Raises:
        DataError: missing file, not an npz/npy, corrupt archive, no ``x`` key, object arrays.
    """
    path = Path(path)
    loaded = _open(path)
    if isinstance(loaded, np.ndarray):  # a plain .npy: images only
        if loaded.dtype == object:
            raise DataError(f"{path}: holds Python objects; store numbers")
        return loaded, None
    with loaded as archive:
        keys = list(archive.files)
        key = image_key(keys, path)
        x = _member(archive, key, path)
        label_key = IMAGE_KEYS[key]
        y = _member(archive, label_key, path) if label_key in keys else None
    return x, y


def labels_from_numpy(y: np.ndarray, n: int, origin: str) -> torch.Tensor | None:
    """Check a label array (integers ≥ 0, shape (n,); −1 = "no class", as pytorch-ood marks OOD
    images) and turn it into an int64 tensor — None when every label is −1.

    Raises:
        DataError: wrong shape or type, labels below −1, or −1 mixed with classes.
    """
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{origin}: 'y' must have shape ({n},) to match 'x', got {y.shape}")
    if y.dtype.kind not in "iub":
        if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
            y = y.astype(np.int64)
        else:
            raise DataError(f"{origin}: labels 'y' must be integers, got dtype {y.dtype}")
    if n and int(y.min()) < -1:
        raise DataError(f"{origin}: labels 'y' must be ≥ 0, or −1 for no class; found {y.min()}")
    unlabelled = int((y == -1).sum())
    if unlabelled == n:
        return None
    if unlabelled:
        raise DataError(
            f"{origin}: {unlabelled} of {n} labels are −1 (no class) and the others are classes; "
            "give every image a class, or −1 to all (or leave 'y' out) for unlabelled images"
        )
    return torch.from_numpy(y.astype(np.int64))


def images_from_numpy(x: np.ndarray, origin: str) -> torch.Tensor:
    """Check an image array (uint8, or float in [0, 1]; N×H×W or N×H×W×C or N×C×H×W) and turn it
    into an N×C×H×W tensor; every problem becomes a `DataError` naming `origin`."""
    if x.dtype == np.bool_:
        x = x.astype(np.uint8) * 255
    if x.dtype.kind not in "uf" or (x.dtype.kind == "u" and x.dtype != np.uint8):
        raise DataError(
            f"{origin}: images must be uint8 (0…255) or float in [0, 1], got dtype {x.dtype}"
        )
    if x.ndim == 4 and x.shape[-1] not in (1, 3) and x.shape[1] not in (1, 3):
        raise DataError(
            f"{origin}: 4-d images must have 1 or 3 channels (N×H×W×C or N×C×H×W), "
            f"got shape {x.shape}"
        )
    if x.ndim in (3, 4) and min(x.shape[1:]) == 0:
        raise DataError(f"{origin}: images have an empty dimension, shape {x.shape}")
    return from_numpy_images(x, origin)


def load_npz_set(path: Path, name: str, dataset: str) -> ImageSet:
    """An ImageSet from a data set's ``.npz`` (``x`` uint8 N×H×W, ``y`` int labels)."""
    x, y = read_npz(path)
    images = images_from_numpy(x, str(path))
    labels = None if y is None else labels_from_numpy(y, len(images), str(path))
    return ImageSet(name, images, labels, {"source": dataset, "file": str(path)})
