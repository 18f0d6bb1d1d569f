"""How far an exported guard's outputs are from tripwire's, on a zoo model's real test images.

For each exportable detector: fit on `--fit` training images (seed 0), calibrate on `--calibration`
images of the validation half of the test split, export the guard in each format (written with
a loose tolerance, so that the file is kept whatever its error), run the file on `--test` images
of the evaluation half (ONNX through onnxruntime, the others through torch) and report, per
output, the largest gap relative to the bound `tripwire.export` checks: |a − b| / max(|b|, scale)
with scale the largest threshold (scores) or the row's largest logit (logits), at least 1. A
value ≤ 1e-5 meets the default `--tolerance`. Also reported: flags that differ, and predicted
classes that differ. One JSON line per (model, detector, format) is appended to `--out`; lines
already there are skipped.

Usage:
    TRIPWIRE_DATA=../shared/data .venv/bin/python research/export_fidelity.py \\
        --model resnet-cifar10 --out export-fidelity.jsonl --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from jsonl_log import append_row, done_keys

from tripwire.data import load_source
from tripwire.detectors import create_detector, get_detector_class, list_detectors
from tripwire.export import FORMATS, SUFFIXES, export_guard
from tripwire.guard import Guard
from tripwire.models.zoo import get_recipe, load_model

EXPORTABLE = [
    n
    for n in list_detectors()
    if not get_detector_class(n).export_refusal and not get_detector_class(n).needs_anomalies
]


def run_file(path: Path, fmt: str, images: torch.Tensor) -> list[torch.Tensor]:
    """The file's four outputs on `images`, without tripwire's help."""
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = session.run(None, {"images": images.numpy()})
        return [torch.from_numpy(np.asarray(a)) for a in out]
    module = torch.export.load(str(path)).module() if fmt == "pt2" else torch.jit.load(str(path))
    with torch.no_grad():
        return [t.detach() for t in module(images)]


def relative_gap(got: torch.Tensor, want: torch.Tensor, scale: torch.Tensor) -> float:
    gap = torch.where(got.double() == want.double(), 0.0, (got.double() - want.double()).abs())
    return float((gap / torch.maximum(want.double().abs(), scale)).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a zoo model")
    parser.add_argument("--detectors", nargs="+", default=EXPORTABLE)
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--fit", type=int, default=5_000)
    parser.add_argument("--calibration", type=int, default=2_000)
    parser.add_argument("--test", type=int, default=1_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    done = done_keys(args.out, ("model", "detector", "format"))
    model = load_model(args.model, train_if_missing=False)
    source = get_recipe(args.model).source
    train = load_source(source, "train").take(args.fit, seed=0)
    calibration = load_source(source, "validation").take(args.calibration, seed=0)
    test = load_source(source, "evaluation").take(args.test, seed=0).as_float()
    for name in args.detectors:
        todo = [f for f in args.formats if (args.model, name, f) not in done]
        if not todo:
            continue
        det = create_detector(name)  # seeded detectors default to seed 0
        det.fit(model, train).calibrate(model, calibration)
        guard = Guard(model, det).eval()
        want = guard.check(test, batch_size=250)
        score_scale = guard.thresholds.double().abs().max().clamp_min(1.0)
        logit_scale = want.logits.double().abs().amax(dim=1, keepdim=True).clamp_min(1.0)
        for fmt in todo:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"guard{SUFFIXES[fmt]}"
                start = time.perf_counter()
                export_guard(guard, path, fmt, tolerance=1.0)  # kept whatever its error
                seconds = time.perf_counter() - start
                got = [
                    torch.cat(parts)
                    for parts in zip(
                        *(run_file(path, fmt, batch) for batch in test.split(250)), strict=True
                    )
                ]
                size = path.stat().st_size
            row = {
                "model": args.model,
                "detector": name,
                "format": fmt,
                "test_images": len(test),
                "logits_gap": relative_gap(got[0], want.logits, logit_scale),
                "scores_gap": relative_gap(got[2], want.scores, score_scale),
                "predicted_differ": int((got[1] != want.predicted).sum()),
                "flags_differ": int((got[3] != want.is_anomaly).sum()),
                "export_seconds": round(seconds, 1),
                "file_mib": round(size / 2**20, 2),
            }
            append_row(args.out, row)


if __name__ == "__main__":
    main()
