"""The user's images read one batch at a time, so that scoring a set needs memory for a batch,
not for the set: ``.npy`` files and ``.npz`` members (compressed or not) are read row by row
from their byte stream, folders of image files decoded a batch of files at a time.

Every problem becomes a `DataError` naming the file, as in `tripwire.data.user`.

Examples:
    >>> stream = open_image_stream("big.npz")            # doctest: +SKIP
    >>> for x in stream.batches(256):                     # doctest: +SKIP
    ...     detector.score(model, x)
"""

from __future__ import annotations

import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import torch

from tripwire.data.base import to_float
from tripwire.data.imagefiles import IMAGE_SUFFIXES, decode, probe_mode, resize, to_array
from tripwire.data.npzfile import image_key, images_from_numpy, read_npz
from tripwire.data.user import GREY_MODES, image_files
from tripwire.errors import DataError


@dataclass(frozen=True)
class ImageStream:
    """Images that are read when iterated, not before.

    Attributes:
        name: the file's or folder's name.
        count: how many images.
        files: for a folder, each image's path relative to it, in order; else None.
        resized: how many image files were resized while decoding, by "W×H → w×h" (filled
            as the stream is read).
    """

    name: str
    count: int
    read: Callable[[int], Iterator[np.ndarray]] = field(repr=False)
    origin: str = ""
    files: list[str] | None = None
    resized: Counter[str] = field(default_factory=Counter)

    def batches(self, batch_size: int = 256) -> Iterator[torch.Tensor]:
        """Float32 N×C×H×W batches in [0, 1], in order."""
        for chunk in self.read(batch_size):
            yield to_float(images_from_numpy(chunk, self.origin))


def open_image_stream(path: str | Path, size: tuple[int, int] | None = None) -> ImageStream:
    """A stream of the images in an ``.npy``/``.npz`` file (array ``x``, or ``images`` of an
    anomaly set that `tripwire anomalies make` wrote), an image folder
    (flat or one sub-folder per class, as `tripwire.data.user.load_image_folder`) or one image
    file. `size` = (height, width) resizes the images of a folder or file as they are decoded.

    Raises:
        DataError: missing file, not an array file, no ``x`` array, unreadable header.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_dir():
        return _folder_stream(p, size)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return _files_stream(p.stem, [p], p.parent, size)
    if p.suffix.lower() == ".npy":
        return _array_stream(p, lambda: open(p, "rb"))
    try:
        archive = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{p}: not an .npz/.npy file ({e})") from None
    with archive:
        names = archive.namelist()
    key = image_key([n.removesuffix(".npy") for n in names], p)

    @contextmanager
    def member() -> Iterator[IO[bytes]]:
        with zipfile.ZipFile(p) as archive, archive.open(f"{key}.npy") as f:
            yield f

    return _array_stream(p, member)


def read_npy_header(f: IO[bytes], origin: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    """Shape, dtype and Fortran order of the ``.npy`` array `f` is positioned at, from its header
    alone; `DataError` (naming `origin`) for anything but an array of numbers."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{origin}: not a readable array ({e})") from None
    if dtype.hasobject:
        raise DataError(f"{origin}: holds Python objects; store numbers")
    if not shape:
        raise DataError(f"{origin}: holds a single number, not images")
    return shape, dtype, fortran


def _array_stream(
    path: Path, opener: Callable[[], AbstractContextManager[IO[bytes]]]
) -> ImageStream:
    origin = str(path)
    try:
        with opener() as f:
            shape, dtype, fortran = read_npy_header(f, origin)
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(f"{origin}: cannot read ({e})") from None
    row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def read(batch_size: int) -> Iterator[np.ndarray]:
        if fortran:  # column-major rows are not contiguous: read the whole array once
            x = read_npz(path)[0]
            for start in range(0, len(x), batch_size):
                yield x[start : start + batch_size]
            return
        try:
            with opener() as f:
                read_npy_header(f, origin)
                for start in range(0, shape[0], batch_size):
                    n = min(batch_size, shape[0] - start)
                    data = f.read(n * row)
                    if len(data) != n * row:
                        raise DataError(f"{origin}: truncated after {start} images")
                    # a bytearray: writable, so torch shares it without a warning
                    yield np.frombuffer(bytearray(data), dtype=dtype).reshape(n, *shape[1:])
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{origin}: cannot read ({e})") from None

    return ImageStream(path.stem, int(shape[0]), read, origin)


def _folder_stream(folder: Path, size: tuple[int, int] | None) -> ImageStream:
    files = image_files(folder)
    if not files:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            files += image_files(sub)
    if not files:
        raise DataError(
            f"{folder}: no image files found (looked for {', '.join(IMAGE_SUFFIXES)} in the "
            "folder and in its class sub-folders)"
        )
    return _files_stream(folder.name, files, folder, size)


def _files_stream(
    name: str, files: list[Path], root: Path, size: tuple[int, int] | None
) -> ImageStream:
    mode = "L" if all(probe_mode(f) in GREY_MODES for f in files) else "RGB"
    resized: Counter[str] = Counter()

    def read(batch_size: int) -> Iterator[np.ndarray]:
        expected: tuple[int, ...] | None = None
        for start in range(0, len(files), batch_size):
            arrays = []
            for f in files[start : start + batch_size]:
                im = decode(f, str(f), mode)
                if size is not None and im.size != (size[1], size[0]):
                    resized[f"{im.size[0]}×{im.size[1]} → {size[1]}×{size[0]}"] += 1
                    im = resize(im, size)
                a = to_array(im)
                expected = expected or a.shape
                if a.shape != expected:
                    raise DataError(
                        f"{f}: {a.shape[1]}×{a.shape[0]} pixels where the images before are "
                        f"{expected[1]}×{expected[0]}; resize them to one size first, or give "
                        "the size to resize them to"
                    )
                arrays.append(a)
            yield np.stack(arrays)

    relative = [str(f.relative_to(root)) for f in files]
    return ImageStream(name, len(files), read, str(root), relative, resized)
