"""The user's own images: an ``.npz``/``.npy`` array file, or a folder of image files.

Every way such input can be wrong — missing, not an npz, corrupt archive, no ``x`` array, wrong
shape or dtype, floats outside [0, 1] or NaN, an unreadable image, an empty folder — raises a
`DataError` naming the file and the problem.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from tripwire.data.base import ImageSet
from tripwire.data.imagefiles import IMAGE_SUFFIXES, decode, probe_mode, resize, to_array
from tripwire.data.npzfile import images_from_numpy, labels_from_numpy, read_npz
from tripwire.errors import DataError
from tripwire.progress import track

logger = logging.getLogger(__name__)

GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def load_npz(path: str | Path) -> ImageSet:
    """Images from an ``.npz`` with ``x`` (uint8 N×H×W[×C], or float in [0, 1]) and optional
    ``y`` (integer labels, shape (N,)); or from an ``.npy`` holding just the images.

    Examples:
        >>> np.savez("mine.npz", x=np.zeros((5, 28, 28), np.uint8), y=np.arange(5))
        >>> load_npz("mine.npz").image_shape
        (1, 28, 28)
    """
    path = Path(path)
    x, y = read_npz(path)
    images = images_from_numpy(x, str(path))
    labels = None if y is None else labels_from_numpy(y, len(images), str(path))
    return ImageSet(path.stem, images, labels, {"source": "user npz", "file": str(path)})


def image_files(folder: Path) -> list[Path]:
    """The image files directly inside `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image_folder(path: str | Path, size: tuple[int, int] | None = None) -> ImageSet:
    """Images from a folder of image files (PNG, JPEG, BMP, GIF, TIFF, WebP, PGM/PPM).

    Either the images lie in the folder itself (unlabelled), or in one sub-folder per class
    (labels = the index of the sub-folder in sorted order, as torchvision's ``ImageFolder``).
    All images become grey if every file is grey, else RGB (transparent pixels over black).
    Images of different sizes need `size` = (height, width); they are then resized with
    Pillow ``BILINEAR`` (antialiased). Files are read in sorted order, named in ``info["files"]``.

    Examples:
        >>> s = load_image_folder("my_photos/", size=(32, 32))
        >>> s.image_shape
        (3, 32, 32)
    """
    folder = Path(path)
    if not folder.exists():
        raise DataError(f"{folder}: folder not found")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    files = image_files(folder)
    classes: list[str] = []
    labels_list: list[int] = []
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and image_files(p))
    if files and subs:
        logger.warning(
            "%s: holds images and image sub-folders; reading only the %d images at the top level",
            folder,
            len(files),
        )
    elif not files:
        classes = [p.name for p in subs]
        for k, sub in enumerate(subs):
            sub_files = image_files(sub)
            files += sub_files
            labels_list += [k] * len(sub_files)
    if not files:
        raise DataError(
            f"{folder}: no image files found (looked for {', '.join(IMAGE_SUFFIXES)} in the "
            "folder and in its class sub-folders)"
        )
    modes = [probe_mode(f) for f in files]
    mode = "L" if all(m in GREY_MODES for m in modes) else "RGB"
    arrays = []
    for f in track(files, f"reading {folder.name}"):
        im = decode(f, str(f), mode)
        arrays.append(to_array(resize(im, size) if size is not None else im))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        first, other = arrays[0].shape, next(a.shape for a in arrays if a.shape != arrays[0].shape)
        odd = next(f for f, a in zip(files, arrays, strict=True) if a.shape == other)
        raise DataError(
            f"{folder}: images differ in size ({files[0].name} is {first[1]}×{first[0]}, "
            f"{odd.name} is {other[1]}×{other[0]}); resize them to one size first, or pass "
            "size=(height, width) to resize them on loading"
        )
    x = torch.from_numpy(np.stack(arrays))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor(labels_list, dtype=torch.int64) if classes else None
    info: dict[str, object] = {
        "source": "user image folder",
        "folder": str(folder),
        "files": [str(f.relative_to(folder)) for f in files],
    }
    if classes:
        info["classes"] = classes
    return ImageSet(folder.name, x, labels, info)


def load_user_data(path: str | Path, size: tuple[int, int] | None = None) -> ImageSet:
    """The user's images from a path: a folder → `load_image_folder`, a file → `load_npz`
    (``.npz``/``.npy``) or a single image file.

    Examples:
        >>> s = load_user_data("suspicious.npz")
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_dir():
        return load_image_folder(p, size)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        im = decode(p, str(p), "L" if probe_mode(p) in GREY_MODES else "RGB")
        a = to_array(resize(im, size) if size is not None else im)
        t = torch.from_numpy(a.copy())
        t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None].contiguous()
        return ImageSet(p.stem, t, None, {"source": "user image", "file": str(p)})
    return load_npz(p)
