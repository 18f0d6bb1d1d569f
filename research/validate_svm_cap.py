"""Does capping the inputs per class that fit each one-class SVM cost detection? Validation only.

The uniform detectors' scoring cost grows with the support vectors, i.e. with the inputs each
class's SVM is fitted on (`max_per_class`). This compares caps on the validation anomalies of
`research/select_uniform_plus.py` — ID-made proxies, FGSM and DeepFool of held-out *training*
images, font letters K–Z, gradient fooling images; no test set — with the ID side a held-out part
of MNIST's training split, and the SVMs fitted on the other 57,000 training images.

Usage: python research/validate_svm_cap.py [--data-dir DIR] [--caps 10000 2000] [--seed 0]
"""

from __future__ import annotations

import argparse

from select_uniform_plus import validation_sets

from tripwire import metrics
from tripwire.data import load_source
from tripwire.detectors import create_detector
from tripwire.models.zoo import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--caps", type=int, nargs="+", default=[10_000, 2000])
    ap.add_argument("--detectors", nargs="+", default=["uniform", "uniform-plus"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model = load_model("lenet-mnist", data_dir=args.data_dir, seed=args.seed)
    train = load_source("mnist", "train", args.data_dir)
    fit, held = train.split(0.05, seed=args.seed)
    sets = validation_sets(model, held, args.data_dir, args.seed)
    held_x = held.as_float()[1000:]  # ID side: held-out training digits not used for proxies
    print(f"fit on {len(fit)} training images; ID side {len(held_x)} held-out training images\n")
    print("| detector | max_per_class | SVs a class (MDL, logits) | " + " | ".join(sets) + " |")
    print("|---" * (len(sets) + 3) + "|")
    for name in args.detectors:
        for cap in args.caps:
            det = create_detector(name, seed=args.seed, max_per_class=cap).fit(model, fit)
            s_id = det.score(model, held_x)
            cells = " | ".join(
                f"{100 * metrics.auroc(s_id, det.score(model, v)):.2f}" for v in sets.values()
            )
            svs = f"{det.svm_mdl_.support.shape[1]}, {det.svm_logit_.support.shape[1]}"
            print(f"| {name} | {cap} | {svs} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
