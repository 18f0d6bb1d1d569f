"""White-box against oblivious PGD-L∞ on LeNet-5 / MNIST, per detector (a first look for #25).

For each detector: fitted on 10,000 MNIST training images (seeded), calibrated at 95 % TPR on
the MNIST validation half; 500 evaluation-half test images that the model classifies correctly
are attacked with `adaptive_pgd` (L∞, 100 steps of ε/40, random start) by the oblivious attacker
(cross-entropy only) and by the white-box one (the selective loss through the detector's
scores), at ε = 0.05, 0.1, 0.2, 0.3. One JSON row per (detector, ε, attacker): the share of
attacked images misclassified, and of those misclassified *and* not flagged (the attack's
success) after 10, 25, 50 and 100 steps. The robust detection rate is 1 − success.

Usage:
    TRIPWIRE_DATA=../shared/data python research/adaptive_lenet.py --out adaptive-lenet.jsonl \\
        --threads 1 uniform-fusion msp knn vim
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from tripwire.anomalies.adaptive import NotDifferentiableError, adaptive_pgd
from tripwire.data import load_source
from tripwire.detectors import create_detector, get_detector_class
from tripwire.models.zoo import load_model

sys.path.insert(0, str(Path(__file__).parent))
from jsonl_log import append_row, done_keys

EPSILONS = (0.05, 0.1, 0.2, 0.3)
STEPS = 100
CHECKPOINTS = (10, 25, 50, 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("detectors", nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model("lenet-mnist", seed=args.seed)
    fit = load_source("mnist", "train").take(10_000, seed=args.seed)
    calibration = load_source("mnist", "validation")
    test = load_source("mnist", "evaluation").take(2 * args.n, seed=args.seed)
    x, y = test.as_float(), test.require_labels()
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    x, y = x[correct][: args.n], y[correct][: args.n]
    done = done_keys(args.out, ("detector", "eps", "attacker"))
    for name in args.detectors:
        if all((name, e, a) in done for e in EPSILONS for a in ("oblivious", "white-box")):
            continue
        seeded = {"seed": args.seed} if "seed" in get_detector_class(name).param_names() else {}
        det = create_detector(name, **seeded)
        start = time.perf_counter()
        det.fit(model, fit).calibrate(model, calibration)
        fit_seconds = round(time.perf_counter() - start, 1)
        for eps in EPSILONS:
            for attacker in ("oblivious", "white-box"):
                if (name, eps, attacker) in done:
                    continue
                start = time.perf_counter()
                try:
                    r = adaptive_pgd(
                        model, det, x, y, eps=eps, step=eps / 40, steps=STEPS,
                        against_detector=attacker == "white-box", seed=args.seed,
                    )  # fmt: skip
                except NotDifferentiableError as e:
                    append_row(args.out, {"detector": name, "eps": eps, "attacker": attacker,
                                          "error": str(e)})  # fmt: skip
                    continue
                append_row(
                    args.out,
                    {
                        "detector": name, "eps": eps, "attacker": attacker, "n": len(x),
                        "seed": args.seed, "misclassified": r.misclassified.double().mean().item(),
                        "success": {t: r.success_after(t) for t in CHECKPOINTS},
                        "fit_seconds": fit_seconds,
                        "seconds": round(time.perf_counter() - start, 1),
                    },
                )  # fmt: skip


if __name__ == "__main__":
    main()
