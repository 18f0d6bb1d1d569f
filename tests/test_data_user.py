"""The user's own data: good npz files and folders load; every kind of bad input raises a
`DataError` that names the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tripwire.data import load_image_folder, load_npz, load_user_data
from tripwire.errors import DataError


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIPWIRE_PROGRESS", "0")


def test_npz_uint8_grey_with_labels(tmp_path: Path) -> None:
    p = tmp_path / "mine.npz"
    x = np.arange(5 * 28 * 28, dtype=np.int64).reshape(5, 28, 28).astype(np.uint8)
    np.savez(p, x=x, y=np.array([3, 1, 4, 1, 5]))
    s = load_npz(p)
    assert s.image_shape == (1, 28, 28) and s.images.dtype == torch.uint8
    assert torch.equal(s.images[:, 0], torch.from_numpy(x))
    assert s.require_labels().tolist() == [3, 1, 4, 1, 5]


def test_npz_float_rgb_channels_last(tmp_path: Path) -> None:
    p = tmp_path / "rgb.npz"
    x = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float64)
    np.savez(p, x=x)
    s = load_user_data(p)
    assert s.image_shape == (3, 32, 32) and s.labels is None
    assert torch.allclose(s.as_float()[1, 2], torch.from_numpy(x[1, :, :, 2]).float())


def test_npy_images_only(tmp_path: Path) -> None:
    p = tmp_path / "imgs.npy"
    np.save(p, np.zeros((2, 3, 16, 16), np.uint8))
    assert load_user_data(p).image_shape == (3, 16, 16)


def _bad_npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    return p


BAD_NPZ = {
    "no x key": ({"pictures": np.zeros((2, 8, 8), np.uint8)}, "no array named 'x'"),
    "wrong ndim": ({"x": np.zeros((8, 8), np.uint8)}, "N×H×W"),
    "wrong channels": ({"x": np.zeros((2, 5, 8, 8), np.uint8)}, "channels"),
    "int64 images": ({"x": np.zeros((2, 8, 8), np.int64)}, "dtype int64"),
    "uint16 images": ({"x": np.zeros((2, 8, 8), np.uint16)}, "dtype uint16"),
    "float over 1": ({"x": np.full((2, 8, 8), 255.0)}, r"\[0, 1\]"),
    "negative float": ({"x": np.full((2, 8, 8), -0.5)}, r"\[0, 1\]"),
    "NaN": ({"x": np.full((2, 8, 8), np.nan, np.float32)}, "NaN"),
    "empty": ({"x": np.zeros((0, 8, 8), np.uint8)}, "no images"),
    "label count": ({"x": np.zeros((3, 8, 8), np.uint8), "y": np.arange(2)}, r"shape \(3,\)"),
    "float labels": ({"x": np.zeros((2, 8, 8), np.uint8), "y": np.array([0.5, 1.0])}, "integers"),
    "negative labels": ({"x": np.zeros((2, 8, 8), np.uint8), "y": np.array([-2, 0])}, "≥ 0"),
    "some labels -1": ({"x": np.zeros((2, 8, 8), np.uint8), "y": np.array([-1, 0])}, "1 of 2"),
    "string images": ({"x": np.array([["a"]])}, "dtype"),
}


@pytest.mark.parametrize("case", list(BAD_NPZ))
def test_bad_npz_raises_data_error_naming_file(case: str, tmp_path: Path) -> None:
    arrays, pattern = BAD_NPZ[case]
    p = _bad_npz(tmp_path, **arrays)
    with pytest.raises(DataError, match=pattern) as e:
        load_npz(p)
    assert "bad.npz" in str(e.value)


def test_labels_all_minus_one_mean_unlabelled(tmp_path: Path) -> None:
    """pytorch-ood marks OOD images with the label −1: such a set is an unlabelled one."""
    p = tmp_path / "ood.npz"
    np.savez(p, x=np.zeros((3, 8, 8), np.uint8), y=np.full(3, -1))
    assert load_npz(p).labels is None


def test_an_anomaly_set_is_input_to_the_other_commands(tmp_path: Path) -> None:
    """What `tripwire anomalies make` writes (`AnomalySet.save`) reads as user data and streams."""
    from tripwire.anomalies import make_anomalies
    from tripwire.data.stream import open_image_stream

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    made = make_anomalies("uniform", model, n=5, shape=[1, 8, 8], seed=0, use_cache=False)
    path = made.save(tmp_path / "noise.npz")
    data = load_user_data(path)
    assert torch.equal(data.as_float(), made.images)
    assert data.labels is None  # noise has no source class (−1)
    streamed = torch.cat(list(open_image_stream(path).batches(2)))
    assert torch.equal(streamed, made.images)


def test_object_array_refused_without_unpickling(tmp_path: Path) -> None:
    p = tmp_path / "obj.npz"
    np.savez(p, x=np.array([np.zeros(3), np.zeros(4)], dtype=object))
    with pytest.raises(DataError, match=r"obj.npz"):
        load_npz(p)


def test_pickle_file_refused(tmp_path: Path) -> None:
    import pickle

    p = tmp_path / "sneaky.npz"
    p.write_bytes(pickle.dumps({"x": [1, 2, 3]}))
    with pytest.raises(DataError, match=r"sneaky.npz.*unpickle"):
        load_npz(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nothere.npz"):
        load_npz(tmp_path / "nothere.npz")
    with pytest.raises(DataError, match="nothere"):
        load_user_data(tmp_path / "nothere")


def test_not_an_npz(tmp_path: Path) -> None:
    p = tmp_path / "notes.npz"
    p.write_text("hello, these are not arrays")
    with pytest.raises(DataError, match=r"notes.npz"):
        load_npz(p)


def test_truncated_npz(tmp_path: Path) -> None:
    p = tmp_path / "cut.npz"
    np.savez(p, x=np.zeros((50, 28, 28), np.uint8))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut.npz"):
        load_npz(p)


def _write_images(folder: Path, n: int, mode: str, size: tuple[int, int], ext: str = "png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
            folder / f"img{i}.{ext}"
        )


def test_flat_folder_grey(tmp_path: Path) -> None:
    _write_images(tmp_path / "f", 3, "L", (20, 12))
    s = load_image_folder(tmp_path / "f")
    assert s.image_shape == (1, 12, 20) and s.labels is None
    assert s.info["files"] == ["img0.png", "img1.png", "img2.png"]
    expect = np.array(Image.open(tmp_path / "f" / "img1.png"))
    assert torch.equal(s.images[1, 0], torch.from_numpy(expect))


def test_class_folders_give_labels_and_mixed_modes_become_rgb(tmp_path: Path) -> None:
    _write_images(tmp_path / "d" / "cats", 2, "RGB", (16, 16), "jpg")
    _write_images(tmp_path / "d" / "dogs", 3, "L", (16, 16), "bmp")
    s = load_user_data(tmp_path / "d")
    assert s.image_shape == (3, 16, 16)
    assert s.require_labels().tolist() == [0, 0, 1, 1, 1]
    assert s.info["classes"] == ["cats", "dogs"]
    grey = s.images[2]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_folder_sizes_differ_needs_size(tmp_path: Path) -> None:
    _write_images(tmp_path / "m", 1, "L", (10, 10))
    Image.new("L", (14, 9)).save(tmp_path / "m" / "z_other.png")
    with pytest.raises(DataError, match=r"z_other.png.*differ|differ.*z_other.png"):
        load_image_folder(tmp_path / "m")
    s = load_image_folder(tmp_path / "m", size=(8, 8))
    assert s.image_shape == (1, 8, 8)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match=r"empty.*no image files"):
        load_image_folder(tmp_path / "empty")


def test_unreadable_image_in_folder(tmp_path: Path) -> None:
    _write_images(tmp_path / "u", 2, "L", (8, 8))
    (tmp_path / "u" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"broken.png"):
        load_image_folder(tmp_path / "u")


def test_single_image_file(tmp_path: Path) -> None:
    Image.new("RGBA", (5, 7), (255, 0, 0, 255)).save(tmp_path / "one.png")
    s = load_user_data(tmp_path / "one.png")
    assert s.image_shape == (3, 7, 5)
    assert s.images[0, :, 0, 0].tolist() == [255, 0, 0]
