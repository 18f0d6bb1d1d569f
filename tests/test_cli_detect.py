"""`tripwire fit` / `tripwire score` end to end on the 8×8 digits, and `Guard`."""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner, Result

from tripwire.cli import app
from tripwire.data import load_source
from tripwire.detectors import Detector, list_detectors
from tripwire.errors import (
    DataError,
    FormatError,
    InvalidInputError,
    ModelMismatchError,
    NotFittedError,
)
from tripwire.guard import Guard
from tripwire.models.zoo import load_model

runner = CliRunner()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("det") / "det"
    result = runner.invoke(app, ["fit", "--model", "cnn-digits8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "layer choice" in result.output
    assert "1078 images of digits8, thresholds on 269" in _text(result)  # 269: never trained on
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", list_detectors())
def test_fit_works_for_every_registered_detector(name: str, tmp_path: Path) -> None:
    out = tmp_path / name
    result = runner.invoke(
        app, ["fit", "--model", "cnn-digits8", "--detector", name, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    det = Detector.load(out)
    assert det.name == name and det.thresholds_ is not None
    if det.needs_anomalies:
        assert "FGSM" in result.output


def _npz(path: Path, x: np.ndarray) -> Path:
    np.savez(path, x=x)
    return path


def test_score_writes_one_row_per_image(fitted: Path, tmp_path: Path) -> None:
    test = load_source("digits8", "test")
    digits = (test.as_float()[:100, 0].numpy() * 255).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (50, 8, 8), dtype=np.uint8)
    src = _npz(tmp_path / "x.npz", np.concatenate([digits, noise]))
    out = tmp_path / "scores.csv"
    threads = torch.get_num_threads()
    try:
        args = ["score", "--detector", str(fitted), "--input", str(src), "--out", str(out)]
        result = runner.invoke(app, [*args, "--threads", "1"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["index", "predicted_class", "score", "is_anomaly"]
    assert [int(r["index"]) for r in rows] == list(range(150))
    flags = np.array([int(r["is_anomaly"]) for r in rows])
    assert flags[:100].mean() < 0.2 and flags[100:].mean() > 0.8


def test_score_resizes_images_of_another_size_and_says_so(
    fitted: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = _npz(tmp_path / "big.npz", np.zeros((3, 28, 28, 3), dtype=np.uint8))
    out = tmp_path / "s.csv"
    args = ["score", "--detector", str(fitted), "--input", str(src), "--out", str(out)]
    with caplog.at_level("WARNING"):
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(list(csv.DictReader(out.open()))) == 3
    assert "3 of 3 images were converted" in caplog.text and "3 × 3×28×28 → 1×8×8" in caplog.text
    out.unlink()
    refused = runner.invoke(app, [*args, "--no-resize"])
    assert isinstance(refused.exception, DataError) and "3×28×28" in str(refused.exception)
    assert not out.exists()


def test_a_folder_of_images_of_another_size_is_counted(
    fitted: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, side in enumerate((8, 8, 100)):
        Image.fromarray(np.zeros((side, side), np.uint8)).save(folder / f"{i}.png")
    args = ["score", "--detector", str(fitted), "--input", str(folder)]
    with caplog.at_level("WARNING"):
        result = runner.invoke(app, [*args, "--out", str(tmp_path / "s.csv")])
    assert result.exit_code == 0, result.output
    assert "1 of 3 images were converted" in caplog.text and "100×100 → 8×8" in caplog.text


@pytest.mark.parametrize(
    "content",
    [
        {"x": np.full((4, 8, 8), np.nan, dtype=np.float32)},
        {"x": np.full((4, 8, 8), 2.0, dtype=np.float32)},
        {"y": np.zeros(4)},
        {"x": np.zeros((4,), dtype=np.uint8)},
    ],
    ids=["nan", "above-one", "no-x", "wrong-shape"],
)
def test_bad_input_is_refused_and_nothing_written(
    fitted: Path, tmp_path: Path, content: dict[str, np.ndarray]
) -> None:
    src = tmp_path / "bad.npz"
    np.savez(src, **content)
    out = tmp_path / "scores.csv"
    result = runner.invoke(
        app, ["score", "--detector", str(fitted), "--input", str(src), "--out", str(out)]
    )
    assert result.exit_code != 0
    assert not out.exists() and not list(tmp_path.glob(".scores.csv*"))


def test_main_prints_one_line_and_exits_2(fitted: Path, tmp_path: Path) -> None:
    env = {**os.environ, "TRIPWIRE_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "tripwire", "score", "--detector", str(fitted)]
    cmd += ["--input", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "o.csv")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "missing.npz" in proc.stderr and "Traceback" not in proc.stderr


def test_guard_binds_model_and_detector(fitted: Path) -> None:
    model = load_model("cnn-digits8")
    det = Detector.load(fitted)
    assert det.model_ref_["name"] == "cnn-digits8"
    x = load_source("digits8", "test").as_float()[:20]
    result = Guard(model, det)(x)
    assert result.predicted.shape == result.scores.shape == result.is_anomaly.shape == (20,)
    torch.testing.assert_close(result.scores, det.score(model, x))
    with pytest.raises(InvalidInputError):
        Guard(model, det)(x[:, :, :4])


def test_guard_refuses_other_weights_and_uncalibrated(fitted: Path) -> None:
    model = load_model("cnn-digits8")
    det = Detector.load(fitted)
    other = load_model("cnn-digits8")
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    with pytest.raises(ModelMismatchError, match="cnn-digits8"):
        Guard(other, det)
    det.thresholds_ = None
    with pytest.raises(NotFittedError):
        Guard(model, det)


def test_cli_starts_without_loading_scikit_learn_or_scipy() -> None:
    """They take ≈ 1 s to import; commands that need them import them where used."""
    probe = "import sys, tripwire.cli; sys.exit(bool({'sklearn', 'scipy'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", probe]).returncode == 0


def test_help_paragraphs_reflow_to_the_terminal_width() -> None:
    result = runner.invoke(app, ["score", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    # one docstring paragraph spans three source lines; it must print as one line here
    assert any(
        "The input is read one batch at a time, so memory does not grow with the number" in line
        for line in result.output.splitlines()
    )


def test_layer_choice_table_of_many_candidates_shows_the_best_and_the_chosen() -> None:
    from rich.console import Console

    from tripwire.cli.detect import _layer_choice_table

    criterion = {f"layer{i}": i / 200 for i in range(131)}  # layer130 best
    console = Console(width=200, record=True)
    console.print(_layer_choice_table(criterion, chosen="layer3"))
    text = console.export_text()
    assert "the best 11 of 131 candidates" in " ".join(text.split())  # the title wraps
    assert "layer130" in text and "layer121" in text and "layer120 " not in text
    assert "layer3 " in text and "← chosen" in text
    few = Console(width=200, record=True)
    few.print(_layer_choice_table({"conv1": 0.9, "relu1": 0.95}, "relu1", "median"))
    few_text = " ".join(few.export_text().split())
    assert "candidates" not in few_text  # all shown
    assert "median AUROC" in few_text


@pytest.mark.parametrize("size", ["0", "-1"])
def test_batch_size_below_one_is_a_usage_error(fitted: Path, tmp_path: Path, size: str) -> None:
    src = _npz(tmp_path / "x.npz", np.zeros((2, 8, 8), np.uint8))
    args = ["score", "--detector", str(fitted), "--input", str(src), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, [*args, "--batch-size", size])
    assert result.exit_code == 2 and "greater than or equal to 1" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_an_unwritable_out_is_a_clear_error(fitted: Path, tmp_path: Path) -> None:
    src = _npz(tmp_path / "x.npz", np.zeros((2, 8, 8), np.uint8))
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "scores.csv"
    result = runner.invoke(
        app, ["score", "--detector", str(fitted), "--input", str(src), "--out", str(out)]
    )
    assert isinstance(result.exception, InvalidInputError)
    assert "cannot write the scores" in str(result.exception)
    fit = runner.invoke(app, ["fit", "--model", "cnn-digits8", "--out", str(tmp_path / "a-file")])
    assert isinstance(fit.exception, FormatError) and "not a folder" in str(fit.exception)


def test_float64_images_and_folders_score_like_uint8(fitted: Path, tmp_path: Path) -> None:
    from PIL import Image

    digits = (load_source("digits8", "test").as_float()[:12, 0].numpy() * 255).astype(np.uint8)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, d in enumerate(digits):
        Image.fromarray(d).save(folder / f"digit{i:02d}.png")
    rows = {}
    for name, src in {
        "uint8": _npz(tmp_path / "u.npz", digits),
        "float64": _npz(tmp_path / "f.npz", digits.astype(np.float64) / 255),
        "folder": folder,
    }.items():
        out = tmp_path / f"{name}.csv"
        args = ["score", "--detector", str(fitted), "--input", str(src), "--out", str(out)]
        result = runner.invoke(app, [*args, "--batch-size", "5"])
        assert result.exit_code == 0, result.output
        rows[name] = list(csv.DictReader(out.open()))
    assert [r["file"] for r in rows["folder"]] == [f"digit{i:02d}.png" for i in range(12)]
    for name in ("float64", "folder"):
        assert [float(r["score"]) for r in rows[name]] == pytest.approx(
            [float(r["score"]) for r in rows["uint8"]], rel=1e-4, abs=1e-4
        )


def _text(result: Result) -> str:
    """The command's output with the terminal's line wrapping undone."""
    return " ".join(result.output.split())


def test_thresholds_come_from_images_the_model_never_trained_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fit = ["fit", "--model", "cnn-digits8", "--detector", "msp"]
    # a named source: the validation half of its test split
    named = runner.invoke(app, [*fit, "--data", "digits8", "--out", str(tmp_path / "a")])
    assert named.exit_code == 0, named.output
    assert "thresholds on 225 images of digits8-test[validation]" in _text(named)
    assert not _seen_training(caplog)
    # a file of training images: a held-out share of it, with a warning that says what to do
    train = load_source("digits8", "train")
    x = (train.as_float()[:, 0].numpy() * 255).astype(np.uint8)
    data = _npz(tmp_path / "train.npz", x)
    from_file = runner.invoke(app, [*fit, "--data", str(data), "--out", str(tmp_path / "b")])
    assert from_file.exit_code == 0, from_file.output
    assert "thresholds on 135 images" in _text(from_file)
    (warning,) = _seen_training(caplog)
    assert (
        "model was trained on them" in warning.getMessage()
        and "--calibration-data" in warning.getMessage()
    )
    caplog.clear()
    # --calibration-data: every one of its images sets the thresholds, no warning
    test = load_source("digits8", "test")
    calib = _npz(tmp_path / "calib.npz", (test.as_float()[:300, 0].numpy() * 255).astype(np.uint8))
    given = runner.invoke(
        app,
        [*fit, "--data", str(data), "--calibration-data", str(calib), "--out", str(tmp_path / "c")],
    )
    assert given.exit_code == 0, given.output
    assert "on 1347 images" in _text(given) and "thresholds on 300 images" in _text(given)
    assert not _seen_training(caplog)


def _seen_training(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The warnings that the calibration images may be training images (the 8×8 digits have
    ≈ 25 calibration images a class, so the few-images warning comes too, and is not these)."""
    return [r for r in caplog.records if "trained on them" in r.getMessage()]
