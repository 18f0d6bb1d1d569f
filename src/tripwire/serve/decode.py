"""Images of a request: PNG / JPEG / other Pillow formats, or ``.npy`` arrays, turned into the
model's float N×C×H×W input — with every problem a `DataError` (the API answers 4xx) and every
limit checked before the work it bounds."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from tripwire.data.imagefiles import decode, resize, to_array
from tripwire.data.npzfile import images_from_numpy
from tripwire.data.stream import read_npy_header
from tripwire.errors import DataError

NPY_MAGIC = b"\x93NUMPY"


class TooLargeError(DataError):
    """A request or one of its images is over a limit of the server (HTTP 413)."""


def decode_images(
    data: bytes, name: str, shape: tuple[int, ...], max_pixels: int
) -> tuple[torch.Tensor, bool]:
    """The images in one uploaded file, N×C×H×W of the model's input `shape` (uint8, or float in
    [0, 1] as a ``.npy`` held them), and whether they were resized to it.

    A ``.npy`` (recognised by its magic bytes) holds one image (H×W, H×W×C or C×H×W) or a batch
    (N×…), uint8 or float in [0, 1], of the model's size exactly. Any other file is decoded as
    one image by Pillow (after its header says it has at most `max_pixels` pixels), converted to
    grey or RGB as the model takes, and resized to the model's height and width if it differs.

    Raises:
        TooLargeError: more than `max_pixels` pixels in an image.
        DataError: anything else that is not an image the model can take.
    """
    c, h, w = shape
    if data.startswith(NPY_MAGIC):
        stream = io.BytesIO(data)
        array_shape, _, _ = read_npy_header(stream, name)
        if int(np.prod(array_shape[-3:])) > max_pixels * 3:
            raise TooLargeError(f"{name}: {array_shape} is over the server's pixel limit")
        array = np.load(io.BytesIO(data), allow_pickle=False)
        single = array.ndim == 2 or (array.ndim == 3 and array.shape in ((c, h, w), (h, w, c)))
        x = images_from_numpy(array[None] if single else array, name)
        if tuple(x.shape[1:]) != tuple(shape):
            raise DataError(
                f"{name}: images of shape {tuple(x.shape[1:])}; the model takes "
                f"{'×'.join(map(str, shape))} (send arrays of that size, or encoded images, "
                "which are resized)"
            )
        # one memory layout for every request (a permuted N×H×W×C array has other strides, and
        # convolutions then take other kernels, which round differently)
        return x.clone(memory_format=torch.contiguous_format), False
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except Exception:  # Pillow raises many kinds on bad headers; decode says which
        width = height = 0
    if width * height > max_pixels:
        raise TooLargeError(
            f"{name}: {width}×{height} pixels; the server takes at most {max_pixels}"
        )
    image = decode(data, name, "L" if c == 1 else "RGB")
    resized = image.size != (w, h)
    array = to_array(resize(image, (h, w)))
    return images_from_numpy(array[None], name), resized
