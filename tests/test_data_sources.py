"""Every registered data source loads with the declared shape, dtype, range and size; generated
sets are deterministic; Omniglot's two variants are exact inverses; missing files give errors
that say which files to put where."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from tripwire.data import get_source, list_sources, load_source
from tripwire.data.base import ImageSet, halve_test_split
from tripwire.data.font_letters import LETTERS_KZ, render_letters
from tripwire.data.photo_crops import crop_photos
from tripwire.errors import DataError

# MNIST has its own test below; the Tiny ImageNet rebuilds are tested in test_data_cifar.py.
FAST = [
    s.name for s in list_sources() if s.name != "mnist" and not s.name.startswith("tinyimagenet")
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may try the network: `fetch` skips downloads when TRIPWIRE_OFFLINE is set."""
    monkeypatch.setenv("TRIPWIRE_OFFLINE", "1")
    monkeypatch.setenv("TRIPWIRE_PROGRESS", "0")


@pytest.mark.parametrize("name", FAST)
def test_source_loads_with_declared_shape_and_size(name: str, data_dir: Path) -> None:
    source = get_source(name)
    split = source.splits[0]
    s = source.load(split, data_dir)
    assert s.image_shape == source.image_shape
    assert len(s) == source.sizes[split]
    assert s.images.dtype in (torch.uint8, torch.float32)
    x = s.as_float(slice(0, 512))
    assert x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(x.max()) > 0.5  # not blank
    assert float(x.std()) > 0.05
    if s.labels is not None:
        assert s.labels.dtype == torch.int64 and s.labels.shape == (len(s),)
        assert int(s.labels.min()) >= 0


def test_every_source_declares_honest_metadata() -> None:
    for source in list_sources():
        assert source.splits and source.description and source.origin
        assert set(source.sizes) <= set(source.splits)
        assert len(source.image_shape) == 3 and source.image_shape[0] in (1, 3)


def test_files_present(data_dir: Path, tmp_path: Path) -> None:
    for name in ("mnist", "fashion-mnist", "omniglot", "animal-mnist"):
        assert get_source(name).files_present("test", data_dir) is True
        assert get_source(name).files_present("test", tmp_path) is False
    assert get_source("font-letters").files_present("test", tmp_path) is True
    for source in list_sources():  # every file-backed source here says which files it needs
        if source.loader.__module__.startswith("tripwire.data") and source.needs_files:
            assert set(source.files) == set(source.splits), source.name


def test_mnist_test_split(mnist_test) -> None:
    assert len(mnist_test) == 10_000 and mnist_test.image_shape == (1, 28, 28)
    counts = torch.bincount(mnist_test.require_labels()).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_fashion_mnist_is_balanced(data_dir: Path) -> None:
    s = load_source("fashion-mnist", "test", data_dir)
    assert torch.bincount(s.require_labels()).tolist() == [1000] * 10
    assert len(s.info["classes"]) == 10


def test_fashion_mnist_reads_idx_files_when_no_npz(tmp_path: Path) -> None:
    """The standard IDX layout works too (tiny synthetic stand-ins of the real files)."""
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    y = np.arange(7, dtype=np.uint8) % 10
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", x)
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", y)
    s = load_source("fashion-mnist", "test", tmp_path)
    assert torch.equal(s.images[:, 0], torch.from_numpy(x))
    assert s.require_labels().tolist() == y.tolist()


def _write_idx(path: Path, a: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + a.tobytes())


def test_omniglot_variants_are_inverses(data_dir: Path) -> None:
    a = load_source("omniglot", "test", data_dir)
    b = load_source("omniglot-inverted", "test", data_dir)
    assert torch.equal(a.images.int() + b.images.int(), torch.full_like(a.images.int(), 255))
    assert torch.equal(a.require_labels(), b.require_labels())
    assert a.as_float().mean() > 0.8  # as distributed: mostly white background
    assert b.as_float().mean() < 0.2  # inverted: mostly black, like MNIST
    assert int(a.require_labels().max()) + 1 == 136  # 136 characters in 5 alphabets


@pytest.mark.parametrize("name", ["font-letters", "font-letters-kz", "photo-crops", "digits8"])
def test_generated_sets_are_deterministic(name: str) -> None:
    a = load_source(name, "test")
    b = load_source(name, "test")
    assert torch.equal(a.images, b.images)
    other = load_source(name, "train")
    assert not torch.equal(a.images[: len(other)], other.images[: len(a)])


def test_render_letters_seed_and_letter_set() -> None:
    x1, y1 = render_letters("KQZ", per_letter=4, seed=3)
    x2, _ = render_letters("KQZ", per_letter=4, seed=3)
    x3, _ = render_letters("KQZ", per_letter=4, seed=4)
    assert np.array_equal(x1, x2) and not np.array_equal(x1, x3)
    assert y1.tolist() == [0, 1, 2] * 4
    assert (x1.reshape(12, -1).max(axis=1) > 200).all()  # every glyph has ink
    assert len(LETTERS_KZ) == 16 and "J" not in LETTERS_KZ


def test_photo_crops_seeded_and_in_both_shapes() -> None:
    g, which = crop_photos(6, seed=1, size=28, channels=1)
    c, which_c = crop_photos(6, seed=1, size=32, channels=3)
    assert g.shape == (6, 28, 28) and c.shape == (6, 32, 32, 3)
    assert np.array_equal(which, which_c)
    assert np.array_equal(g, crop_photos(6, seed=1, size=28, channels=1)[0])


def test_digits8_split_is_fixed_and_disjoint() -> None:
    from tripwire.data.digits8 import digits8_arrays

    xtr, _ = digits8_arrays("train")
    xte, yte = digits8_arrays("test")
    xall, _ = digits8_arrays("all")
    assert len(xtr) == 1347 and len(xte) == 450
    assert torch.bincount(yte).min() >= 43  # stratified
    rows = {tuple(r.tolist()) for r in xall.flatten(1)}
    assert len(rows) <= len(xall)
    assert float(xall.max()) == 1.0 and float(xall.min()) == 0.0
    train_rows = {r.numpy().tobytes() for r in xtr.flatten(1)}
    overlap = sum(r.numpy().tobytes() in train_rows for r in xte.flatten(1))
    assert overlap <= 2  # the 8×8 set has a couple of exact duplicate images, nothing more


def test_digits8_28_is_centred_upscale() -> None:
    s = load_source("digits8-28", "test")
    x = s.as_float()
    assert x.shape[1:] == (1, 28, 28)
    assert float(x[..., :4, :].max()) == 0.0 and float(x[..., 24:, :].max()) == 0.0


def test_mnist_missing_files_error_names_files_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        load_source("mnist", "test", tmp_path)
    msg = str(e.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and str(tmp_path / "mnist") in msg
    assert "t10k-labels-idx1-ubyte.gz" in msg
    assert "TRIPWIRE_OFFLINE" in msg


def test_fashion_missing_files_mention_npz_and_idx(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"fashion_mnist_test\.npz") as e:
        load_source("fashion-mnist", "test", tmp_path)
    assert "t10k-images-idx3-ubyte.gz" in str(e.value)


@pytest.mark.parametrize("name", ["omniglot", "animal-mnist"])
def test_missing_archives_name_the_file(name: str, tmp_path: Path) -> None:
    src = get_source(name)
    with pytest.raises(DataError, match=r"\.(zip|npz)"):
        src.load(None, tmp_path)


def test_corrupt_omniglot_zip(tmp_path: Path) -> None:
    (tmp_path / "omniglot").mkdir()
    bad = tmp_path / "omniglot" / "images_background_small1.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(DataError, match=r"images_background_small1.zip"):
        load_source("omniglot", "test", tmp_path)


def test_unknown_source_and_split() -> None:
    with pytest.raises(DataError, match="known data sources"):
        load_source("no-such-set")
    with pytest.raises(DataError, match=r"no split 'holdout'; available: .*validation"):
        load_source("digits8", "holdout")


def test_validation_and_evaluation_are_fixed_disjoint_halves_of_test() -> None:
    numbered = ImageSet("t", torch.arange(101, dtype=torch.float32).view(101, 1, 1, 1) / 101)
    validation, evaluation = halve_test_split(numbered)
    assert (validation.name, evaluation.name) == ("t[validation]", "t[evaluation]")
    ids = [
        set((part.images.flatten() * 101).round().int().tolist())
        for part in (validation, evaluation)
    ]
    assert ids[0] | ids[1] == set(range(101)) and not ids[0] & ids[1]
    assert abs(len(ids[0]) - len(ids[1])) <= 1
    # a named source's halves are those of its test split, the same on every call
    test = load_source("digits8", "test")
    for split, part in zip(("validation", "evaluation"), halve_test_split(test), strict=True):
        assert torch.equal(load_source("digits8", split).images, part.images)
        assert torch.equal(load_source("digits8", split).require_labels(), part.require_labels())
