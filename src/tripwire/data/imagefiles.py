"""Decoding image files (PNG, JPEG, …) from disk or from zip archives, with one fixed resampling
filter, and `DataError`s that name the file and the problem.

Resizing everywhere in the data sources uses Pillow's ``BILINEAR`` filter (``reducing_gap=None``).
Pillow resamples by convolution, so when shrinking the triangle filter is widened to the scale
factor: it averages over each output pixel's footprint (antialiased) — the same result as
torchvision's ``Resize`` on a PIL image.
"""

from __future__ import annotations

import contextlib
import io
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tripwire.errors import DataError

RESAMPLE = Image.Resampling.BILINEAR
RESAMPLE_NAME = "PIL BILINEAR (antialiased triangle filter when shrinking)"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def open_zip(path: Path, dataset: str) -> zipfile.ZipFile:
    """Open a zip archive; a missing or corrupt file becomes a `DataError` naming it."""
    if not path.exists():
        raise DataError(
            f"{dataset}: {path} not found. Put the file {path.name} into {path.parent} (or point "
            "--data-dir / $TRIPWIRE_DATA at a directory that holds it)."
        )
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{dataset}: {path} is not a readable zip archive ({e})") from None


def read_member(archive: zipfile.ZipFile, member: str, origin: str) -> bytes:
    """The bytes of one archive member (a corrupt member becomes a `DataError`)."""
    try:
        return archive.read(member)
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise DataError(f"{origin}: cannot read {member} ({e}); the archive is corrupt") from None


_UNREADABLE = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


@contextlib.contextmanager
def _no_bombs() -> Iterator[None]:
    """Pillow's decompression-bomb warning (more than ``Image.MAX_IMAGE_PIXELS`` pixels) raised
    as an error, as Pillow already does beyond twice that: such a file is refused, not decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def decode(data: bytes | Path, origin: str, mode: str | None = None) -> Image.Image:
    """Decode an image (from bytes or a file), fully loaded, optionally converted to `mode`.

    `mode` is a Pillow mode, "L" (grey) or "RGB"; 16-bit and float images are scaled to 8 bits.
    """
    try:
        with _no_bombs():
            img: Image.Image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
            img.load()
    except _UNREADABLE as e:
        raise DataError(f"{origin}: not a readable image ({e})") from None
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(a.max()), 1.0)
        img = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if mode is not None and img.mode != mode:
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            # Transparent pixels over black, like a white-on-black MNIST image.
            rgba = img.convert("RGBA")
            base = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            img = Image.alpha_composite(base, rgba)
        img = img.convert(mode)
    return img


def probe_mode(path: Path) -> str:
    """The Pillow mode of an image file, from its header only (cheap); `DataError` if unreadable."""
    try:
        with _no_bombs(), Image.open(path) as img:
            return img.mode
    except _UNREADABLE as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


def resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to `size` = (height, width) with the fixed filter `RESAMPLE`."""
    h, w = size
    if img.size == (w, h):
        return img
    return img.resize((w, h), RESAMPLE, reducing_gap=None)


def to_array(img: Image.Image) -> np.ndarray:
    """H×W (grey) or H×W×3 (RGB) uint8, a writable copy."""
    return np.array(img, dtype=np.uint8)


def read_zip_images(
    archive: zipfile.ZipFile,
    members: list[str],
    origin: str,
    mode: str = "RGB",
    size: tuple[int, int] | None = None,
    description: str = "decoding images",
) -> np.ndarray:
    """Decode `members` of an archive into one uint8 array (N×H×W for "L", N×H×W×3 for "RGB"),
    resized to `size` = (height, width) when given; all images must then share one size."""
    from tripwire.progress import track

    out: np.ndarray | None = None
    for i, m in enumerate(track(members, description)):
        img = decode(read_member(archive, m, origin), f"{origin}:{m}", mode)
        if size is not None:
            img = resize(img, size)
        a = to_array(img)
        if out is None:
            out = np.empty((len(members), *a.shape), dtype=np.uint8)
        if a.shape != out.shape[1:]:
            raise DataError(f"{origin}:{m}: image is {a.shape}, expected {out.shape[1:]}")
        out[i] = a
    if out is None:
        raise DataError(f"{origin}: no images to read")
    return out
