"""`Guard` as an `nn.Module` and `tripwire.export`: every exportable detector gives the Python
guard's outputs from a TorchScript, torch.export or ONNX file, and those files run without
tripwire."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch
from typer.testing import CliRunner

from tiny_world import CONTRACT_PARAMS, SHAPE, contract_world, fit_on_world
from tripwire.cli import app
from tripwire.detectors import create_detector, list_detectors
from tripwire.errors import InvalidInputError
from tripwire.export import (
    FORMATS,
    OUTPUT_NAMES,
    ExportError,
    NotExportableError,
    export_guard,
)
from tripwire.guard import Guard

REFUSED = {"odin", "feature-response", "kd_bu", "fingerprints", "daain"}
# ONNX Runtime's float32 distances put LID's log-ratios of near neighbours 7e-5 apart: the
# export refuses a file that does not give the guard's outputs (to 1e-5)
ONNX_UNFAITHFUL = {"lid"}
# The tiny world's 16-unit head amplifies float32 rounding of the features: ViM's α ·
# residual and RMDS's two Mahalanobis distances differed from ONNX Runtime's by 5.9e-4 and
# 9.4e-5 of their scale on ID images
TOLERANCE = {"vim": 2e-3, "rmds": 3e-4}


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    return contract_world()


def _guard(name: str, world: dict[str, Any]) -> Guard:
    det = fit_on_world(create_detector(name, **CONTRACT_PARAMS.get(name, {})), world)
    det.calibrate(world["model"], world["val"])
    return Guard(world["model"], det)


def test_guard_forward_is_the_detectors_scores_and_flags(world: dict[str, Any]) -> None:
    guard = _guard("uniform-fusion", world)
    x = world["test"][:50]
    logits, predicted, scores, flags = guard(x)
    want_scores, want_predicted = guard.detector.score_and_predict(world["model"], x)
    torch.testing.assert_close(scores, want_scores)
    assert torch.equal(predicted, want_predicted)
    assert torch.equal(flags, guard.detector.flag(want_scores, want_predicted))
    torch.testing.assert_close(logits, world["model"](x))
    checked = guard.check(x.numpy(), batch_size=16)  # any input form, batch by batch
    assert torch.equal(checked.is_anomaly, flags)
    assert torch.equal(guard.state_dict()["thresholds"], guard.detector.thresholds_)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_detectors())
def test_every_detector_exports_faithfully_or_says_why_not(
    name: str, world: dict[str, Any], tmp_path: Path
) -> None:
    guard = _guard(name, world)
    for fmt in FORMATS:
        path = tmp_path / f"guard-{fmt}"
        if name in REFUSED:
            with pytest.raises(NotExportableError, match=name):
                export_guard(guard, path, fmt)
        elif fmt == "onnx" and name in ONNX_UNFAITHFUL:
            with pytest.raises(ExportError, match="does not give the guard's outputs"):
                export_guard(guard, path, fmt, check=world["test"][:64])
        else:  # checks the file against the guard itself, on random and on ID images
            tolerance = TOLERANCE.get(name, 1e-5)
            export_guard(guard, path, fmt, check=world["test"][:64], tolerance=tolerance)
            continue
        assert not list(tmp_path.iterdir())  # nothing left behind


def test_onnx_file_runs_in_onnxruntime_with_any_batch_size(
    world: dict[str, Any], tmp_path: Path
) -> None:
    guard = _guard("uniform-fusion", world)
    path = export_guard(guard, tmp_path / "guard.onnx", "onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(OUTPUT_NAMES)
    for n in (1, 33):
        x = world["shift"][:n] if n == 1 else world["test"][:n]
        logits, predicted, scores, flags = session.run(None, {"images": x.numpy()})
        want = guard(x)
        # to 1e-5 of the output or of its scale: the largest threshold, the row's largest logit
        scale = max(1.0, float(guard.thresholds.abs().max()))
        assert (np.abs(scores - want.scores.numpy()) <= 1e-5 * np.maximum(scale, abs(scores))).all()
        row_scale = np.maximum(1.0, np.abs(want.logits.numpy()).max(axis=1, keepdims=True))
        assert (np.abs(logits - want.logits.numpy()) <= 1e-5 * row_scale).all()
        assert (predicted == want.predicted.numpy()).all()
        assert (flags == want.is_anomaly.numpy()).all()


_WITHOUT_TRIPWIRE = """
import sys
sys.modules["tripwire"] = None  # any import of tripwire now fails
import numpy as np, torch
x = torch.from_numpy(np.load(sys.argv[2]))
if sys.argv[1].endswith(".pt2"):
    out = torch.export.load(sys.argv[1]).module()(x)
else:
    out = torch.jit.load(sys.argv[1])(x)
np.save(sys.argv[3], out[2].numpy())
"""


@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_torch_files_load_in_a_process_without_tripwire(
    fmt: str, world: dict[str, Any], tmp_path: Path
) -> None:
    guard = _guard("uniform-fusion", world)
    path = export_guard(guard, tmp_path / f"guard.{fmt}", fmt)  # type: ignore[arg-type]
    x = world["test"][:20]
    np.save(tmp_path / "x.npy", x.numpy())
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _WITHOUT_TRIPWIRE,
            str(path),
            str(tmp_path / "x.npy"),
            str(tmp_path / "s.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(
        np.load(tmp_path / "s.npy"), guard(x).scores.numpy(), rtol=1e-5, atol=1e-5
    )


def test_bad_requests_are_refused(world: dict[str, Any], tmp_path: Path) -> None:
    guard = _guard("msp", world)
    with pytest.raises(InvalidInputError, match="unknown export format"):
        export_guard(guard, tmp_path / "g", "tflite")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="example"):
        export_guard(guard, tmp_path / "g", "onnx", example=torch.rand(4, 3, 12, 12))
    with pytest.raises(InvalidInputError, match="check"):
        export_guard(guard, tmp_path / "g", "onnx", check=torch.rand(4, 3, 12, 12))
    with pytest.raises(InvalidInputError, match="tolerance"):
        export_guard(guard, tmp_path / "g", "onnx", tolerance=0.0)
    with pytest.raises(InvalidInputError):
        guard(torch.rand(2, *SHAPE) * 2)  # outside [0, 1]
    assert not (tmp_path / "g").exists()


def test_cli_export_writes_a_checked_file(tmp_path: Path, msp_digits_detector: Path) -> None:
    runner = CliRunner()
    det = msp_digits_detector
    out = tmp_path / "guard.onnx"
    images = tmp_path / "id.npz"
    np.savez(images, x=np.random.default_rng(0).integers(0, 256, (5, 8, 8), dtype=np.uint8))
    result = runner.invoke(
        app, ["export", "--detector", str(det), "--out", str(out), "--check-input", str(images)]
    )
    assert result.exit_code == 0, result.output
    assert out.exists() and "outputs checked" in result.output
    refused = runner.invoke(
        app, ["export", "--detector", str(det), "--out", str(out), "--format", "tflite"]
    )
    assert refused.exit_code != 0 and "tflite" in str(refused.exception)
