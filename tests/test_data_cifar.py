"""CIFAR-10 (JPEG zip and the official binary batches) and the Tiny ImageNet rebuilds."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tripwire.data import load_source
from tripwire.data.cache import cached_arrays
from tripwire.data.cifar10 import BIN_DIR, BIN_TAR, CLASSES
from tripwire.errors import DataError


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRIPWIRE_OFFLINE", "1")
    monkeypatch.setenv("TRIPWIRE_PROGRESS", "0")
    monkeypatch.setenv("TRIPWIRE_CACHE", str(tmp_path / "cache"))


def test_cifar10_jpeg_test_split(data_dir: Path) -> None:
    s = load_source("cifar10", "test", data_dir)
    assert s.image_shape == (3, 32, 32) and len(s) == 10_000
    assert torch.bincount(s.require_labels()).tolist() == [1000] * 10
    assert "JPEG" in str(s.info["lossy"])
    mean = s.as_float().mean(dim=(0, 2, 3))  # official test means 0.494, 0.485, 0.450
    assert torch.allclose(mean, torch.tensor([0.494, 0.485, 0.450]), atol=0.02)


def _batch(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    planes = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    data = b"".join(bytes([labels[i]]) + planes[i].tobytes() for i in range(n))
    return data, planes, labels


def test_cifar10_official_binary_folder_is_preferred_and_lossless(tmp_path: Path) -> None:
    folder = tmp_path / "cifar10" / BIN_DIR
    folder.mkdir(parents=True)
    data, planes, labels = _batch(4, 0)
    (folder / "test_batch.bin").write_bytes(data)
    (tmp_path / "cifar10" / "cifar10_jpeg.zip").write_bytes(b"not used")
    s = load_source("cifar10", "test", tmp_path)
    assert torch.equal(s.images, torch.from_numpy(planes))
    assert s.require_labels().tolist() == labels.tolist()
    assert s.info["lossy"] is False
    assert s.info["classes"] == list(CLASSES)


def test_cifar10_binary_tarball(tmp_path: Path) -> None:
    folder = tmp_path / "cifar10"
    folder.mkdir()
    buf = io.BytesIO()
    parts = [_batch(2, i) for i in range(5)]
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for i, (data, _, _) in enumerate(parts, start=1):
            info = tarfile.TarInfo(f"{BIN_DIR}/data_batch_{i}.bin")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    (folder / BIN_TAR).write_bytes(buf.getvalue())
    s = load_source("cifar10", "train", tmp_path)
    assert len(s) == 10
    assert torch.equal(s.images[8:], torch.from_numpy(parts[4][1]))


def test_cifar10_bad_batch_and_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"(?s)cifar-10-binary\.tar\.gz.*cifar10_jpeg\.zip") as e:
        load_source("cifar10", "test", tmp_path)
    assert "TRIPWIRE_OFFLINE" in str(e.value)
    folder = tmp_path / "cifar10" / BIN_DIR
    folder.mkdir(parents=True)
    (folder / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match=r"test_batch\.bin.*3073-byte"):
        load_source("cifar10", "test", tmp_path)


def test_cifar10_corrupt_zip(tmp_path: Path) -> None:
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar10_jpeg.zip").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(DataError, match=r"cifar10_jpeg\.zip"):
        load_source("cifar10", "test", tmp_path)


def test_cache_stores_slow_builds_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tripwire.data.cache as cache

    src = tmp_path / "src.bin"
    src.write_bytes(b"abc")
    calls = []

    def build() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"x": np.arange(6, dtype=np.uint8).reshape(2, 3)}

    cached_arrays("t", src, "v1", build, tmp_path / "c")
    cached_arrays("t", src, "v1", build, tmp_path / "c")
    assert len(calls) == 2  # fast builds are not cached
    monkeypatch.setattr(cache, "CACHE_MIN_SECONDS", 0.0)
    a = cached_arrays("t", src, "v1", build, tmp_path / "c")
    b = cached_arrays("t", src, "v1", build, tmp_path / "c")
    assert len(calls) == 3 and np.array_equal(a["x"], b["x"])
    src.write_bytes(b"abcd")  # a changed source file is decoded afresh
    cached_arrays("t", src, "v1", build, tmp_path / "c")
    assert len(calls) == 4


@pytest.mark.slow
def test_tinyimagenet_resize_and_crop(data_dir: Path) -> None:
    r = load_source("tinyimagenet-resize", "test", data_dir)
    c = load_source("tinyimagenet-crop", "test", data_dir)
    assert r.image_shape == c.image_shape == (3, 32, 32)
    assert len(r) == len(c) == 10_000 and r.labels is None
    offsets = np.array(c.info["crop_offsets"])
    assert offsets.shape == (10_000, 2) and offsets.min() >= 0 and offsets.max() <= 32
    assert len({tuple(o) for o in offsets[:100].tolist()}) > 90  # offsets really vary
    # a crop is a sharp 32×32 window of the image; the resize a blurred whole: they differ
    assert not torch.equal(r.images[:10], c.images[:10])
    # 189 grey images replicated to RGB
    grey = (c.images[:, 0] == c.images[:, 1]).flatten(1).all(1) & (
        c.images[:, 1] == c.images[:, 2]
    ).flatten(1).all(1)
    assert 150 <= int(grey.sum()) <= 250
    again = load_source("tinyimagenet-crop", "test", data_dir)
    assert torch.equal(again.images, c.images)
