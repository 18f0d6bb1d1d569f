"""Neural fingerprints and feature-response-map entropy on the zoo LeNet-5 (MNIST).

Fingerprints are fitted on attacks of MNIST *training* images (FGSM, and separately BIM-b) and
evaluated on attacks of *test* images; AUROC = clean test images (those the attacks started
from, i.e. correctly classified) vs the successful adversarial examples (anomaly = positive).

    TRIPWIRE_DATA=/work/shared/data .venv/bin/python scripts/eval_fingerprints_frm.py

Prints a Markdown table (attacks × detectors). Attacks are cached by `make_anomalies`.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from tripwire import metrics
from tripwire.anomalies import make_anomalies
from tripwire.data import load_source
from tripwire.data.base import ImageSet
from tripwire.detectors import FeatureResponseDetector, FingerprintDetector
from tripwire.models.zoo import load_model

ATTACKS = ["fgsm", "bim-a", "bim-b", "jsma", "cw-l2", "deepfool"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default="/work/shared/data")
    ap.add_argument("--n-train", type=int, default=5000, help="training images attacked to fit")
    ap.add_argument("--n-test", type=int, default=1000, help="test images attacked")
    ap.add_argument("--n-slow", type=int, default=300, help="test images for JSMA and CW")
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--fused", action="store_true", help="also FRM fused with uniform")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)

    model = load_model("lenet-mnist", data_dir=args.data_dir, progress=False)
    train = load_source("mnist", "train", args.data_dir).take(args.n_train, seed=0)
    test = load_source("mnist", "test", args.data_dir).take(args.n_test, seed=1)
    x_tr, y_tr = train.as_float(), train.require_labels()
    x_te, y_te = test.as_float(), test.require_labels()

    def fit_attacks(kind: str) -> ImageSet:
        s = make_anomalies(kind, model, x_tr, y_tr, seed=0)
        ok = s.success
        print(f"# fit set {kind}: {int(ok.sum())}/{len(s)} successful")
        return ImageSet(f"{kind}-train", s.images[ok], s.labels[ok])

    t0 = time.time()
    detectors: dict[str, object] = {}
    for kind in ("fgsm", "bim-b"):
        adv = fit_attacks(kind)
        detectors[f"FP-lr ({kind})"] = FingerprintDetector().fit(model, train, anomalies=adv)
    detectors["FP-clean"] = FingerprintDetector(mode="clean").fit(model, train)
    detectors["FRM w=5"] = FeatureResponseDetector(window=5).fit(model, train)
    detectors["FRM w=5 two-sided"] = FeatureResponseDetector(window=5, direction="two-sided")
    detectors["FRM w=5 two-sided"].fit(model, train)  # type: ignore[attr-defined]
    if args.fused:
        detectors["FRM+uniform"] = FeatureResponseDetector(window=5, fuse_with="uniform").fit(
            model, train
        )
    print(f"# fitted in {time.time() - t0:.0f} s")
    counts = detectors["FP-lr (fgsm)"].fingerprint_counts()  # type: ignore[attr-defined]
    print(f"# FGSM-fitted fingerprints per class: {counts.tolist()}")

    rows = []
    for kind in args.attacks.split(","):
        n = args.n_slow if kind in ("jsma", "cw-l2") else args.n_test
        t = time.time()
        s = make_anomalies(kind, model, x_te[:n], y_te[:n], seed=1)
        ok = s.success
        sources = torch.unique(s.source_index[s.source_index >= 0])
        clean = x_te[:n][sources]
        adv = s.images[ok]
        row = {
            "attack": kind,
            "n": f"{len(sources)}/{int(ok.sum())}",
            "success": float(ok.float().mean()),
        }
        for name, det in detectors.items():
            s_id = det.score(model, clean)  # type: ignore[attr-defined]
            s_adv = det.score(model, adv)  # type: ignore[attr-defined]
            row[name] = metrics.auroc(s_id, s_adv)
        rows.append(row)
        cells = ", ".join(f"{k} {100 * row[k]:.1f}" for k in detectors)
        print(f"# {kind} ({time.time() - t:.0f} s): {cells}", flush=True)

    names = list(detectors)
    print("\n| attack | clean/adv | success | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for r in rows:
        cells = " | ".join(f"{100 * r[k]:.1f}" for k in names)
        print(f"| {r['attack']} | {r['n']} | {100 * r['success']:.0f} % | {cells} |")


if __name__ == "__main__":
    main()
