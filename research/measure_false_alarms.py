"""Share of clean ID test images each detector flags, with thresholds set on training images the
model has seen (the suites' old protocol) and on the validation half of the test split (images
the model never trained on), for one fitted detector — a paired comparison.

For each zoo model, seed and detector: fit on `--fit` seeded training images; calibrate (target
TPR 0.95, so 5 % flagged) once on `--calibration` other training images and once on as many
images of the validation half; score `--test` images of the evaluation half with each set of
thresholds. With `--swap-halves`, the pair is instead: thresholds on the validation half, flags
counted on the evaluation half (the suites' protocol), and thresholds on the evaluation half,
flags counted on the validation half — whether a flagged share off 5 % follows the fixed cut of
the test split or the detector. One JSON line per (model, seed, detector) is appended to `--out`;
lines already there are skipped, so an interrupted run resumes.

Usage:
    TRIPWIRE_DATA=../shared/data .venv/bin/python research/measure_false_alarms.py \\
        --model resnet-cifar10 --seeds 0 1 2 --out false-alarms.jsonl --threads 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from jsonl_log import append_row, done_keys

from tripwire.data import load_source
from tripwire.detectors import create_detector, get_detector_class, list_detectors
from tripwire.models.zoo import get_recipe, load_model

ID_ONLY = [n for n in list_detectors() if not get_detector_class(n).needs_anomalies]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a zoo model")
    parser.add_argument("--detectors", nargs="+", default=ID_ONLY)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--fit", type=int, default=10_000)
    parser.add_argument("--calibration", type=int, default=5_000)
    parser.add_argument("--test", type=int, default=5_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--swap-halves", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    done = done_keys(args.out, ("model", "seed", "detector"))
    model = load_model(args.model, train_if_missing=False)
    source = get_recipe(args.model).source
    train = load_source(source, "train")
    validation = load_source(source, "validation")
    evaluation = load_source(source, "evaluation").take(args.test, seed=0)
    if args.swap_halves and args.test != args.calibration:
        parser.error("--swap-halves compares halves of equal size: --test = --calibration")
    for seed in args.seeds:
        fit_part, seen = train.take(args.fit + args.calibration, seed=seed).split(
            args.calibration / (args.fit + args.calibration), seed=seed
        )
        unseen = validation.take(args.calibration, seed=seed)
        for name in args.detectors:
            if (args.model, seed, name) in done:
                continue
            params = {"seed": seed} if "seed" in get_detector_class(name).param_names() else {}
            start = time.perf_counter()
            det = create_detector(name, **params).fit(model, fit_part)
            fit_seconds = time.perf_counter() - start
            row = {"model": args.model, "seed": seed, "detector": name, "n_test": len(evaluation)}
            pairs = [("training", seen, evaluation), ("validation", unseen, evaluation)]
            if args.swap_halves:
                pairs = [("validation", unseen, evaluation), ("evaluation", evaluation, unseen)]
            for label, calibration, test in pairs:
                det.calibrate(model, calibration)
                flagged = det.predict(model, test).double().mean().item()
                row[f"flagged_calibrated_on_{label}"] = round(flagged, 5)
            row["fit_seconds"] = round(fit_seconds, 1)
            row["seconds"] = round(time.perf_counter() - start, 1)
            append_row(args.out, row)


if __name__ == "__main__":
    main()
