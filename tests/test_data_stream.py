"""Reading the user's images one batch at a time gives what reading them whole gives."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tripwire.data.stream import open_image_stream
from tripwire.data.user import load_user_data
from tripwire.errors import DataError


def _rng_images(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize(
    "layout",
    ["npz-compressed", "npz-stored", "npy", "npz-float32", "npz-nhwc-rgb", "npz-fortran"],
)
def test_streamed_batches_equal_the_whole_array(layout: str, tmp_path: Path) -> None:
    x = _rng_images((23, 3, 9, 7) if "rgb" not in layout else (23, 9, 7, 3))
    if layout == "npz-float32":
        x = x.astype(np.float32) / 255
    if layout == "npz-fortran":
        x = np.asfortranarray(x)
    path = tmp_path / ("x.npy" if layout == "npy" else "x.npz")
    if layout == "npy":
        np.save(path, x)
    elif layout == "npz-compressed":
        np.savez_compressed(path, x=x, y=np.arange(23))
    else:
        np.savez(path, x=x)
    stream = open_image_stream(path)
    assert stream.count == 23
    batches = list(stream.batches(5))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert torch.equal(torch.cat(batches), load_user_data(path).as_float())


def test_a_folder_streams_with_its_file_names(tmp_path: Path) -> None:
    for i, a in enumerate(_rng_images((7, 6, 6))):
        Image.fromarray(a).save(tmp_path / f"im{i}.png")
    stream = open_image_stream(tmp_path, size=(4, 4))
    assert stream.files == [f"im{i}.png" for i in range(7)]
    whole = load_user_data(tmp_path, size=(4, 4)).as_float()
    assert torch.equal(torch.cat(list(stream.batches(3))), whole)


def test_a_truncated_array_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, _rng_images((50, 8, 8)))
    path.write_bytes(path.read_bytes()[:-100])
    stream = open_image_stream(path)
    with pytest.raises(DataError, match="truncated after 48 images"):
        list(stream.batches(16))


@pytest.mark.parametrize("content", [{"y": np.zeros(3)}, {"x": np.array(["a", "b"], object)}])
def test_bad_archives_are_data_errors(content: dict[str, np.ndarray], tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **content)
    with pytest.raises(DataError):
        list(open_image_stream(path).batches(2))


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4)  # a few rows: a bomb needs no more
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10_000, 20_000])  # 1.1× and 4.5× Pillow's pixel limit
def test_a_decompression_bomb_is_a_data_error(side: int, tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(side, side))
    with pytest.raises(DataError, match=r"bomb\.png"):
        load_user_data(path)
    with pytest.raises(DataError, match=r"bomb\.png"):
        list(open_image_stream(tmp_path).batches(4))
