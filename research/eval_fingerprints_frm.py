"""Neural fingerprints and feature-response-map entropy on the zoo LeNet-5 (MNIST).

Fingerprints are fitted on attacks of MNIST *training* images (FGSM, and separately BIM-b) and
evaluated on attacks of *test* images; AUROC = clean test images (those the attacks started
from, i.e. correctly classified) vs the successful adversarial examples (anomaly = positive).

    TRIPWIRE_DATA=../shared/data .venv/bin/python research/eval_fingerprints_frm.py \\
        --n-train 3000

Prints a Markdown table (attacks × detectors). Attacks are cached by `make_anomalies`.

``--validate`` chooses the fingerprint settings without touching the test images: the attacks of
the first ``n_train − n_val`` training images fit, those of the last ``n_val`` training images
(clean sources vs successful attacks) score, for each setting of a small grid.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import torch

from tripwire import metrics
from tripwire.anomalies import AnomalySet, get_generator, make_anomalies
from tripwire.data import load_source
from tripwire.data.base import ImageSet
from tripwire.detectors import FeatureResponseDetector, FingerprintDetector
from tripwire.models.zoo import load_model

# row label → (generator kind, parameters); the slow ones run on --n-slow test images
ATTACKS: dict[str, tuple[str, dict[str, Any]]] = {
    "fgsm": ("fgsm", {}),
    "bim-a": ("bim-a", {}),
    "bim-b": ("bim-b", {}),
    "jsma": ("jsma", {}),
    "cw-l2": ("cw-l2", {}),
    "deepfool": ("deepfool", {}),
    "one-pixel": ("one-pixel", {"pixels": 1}),
    "three-pixel": ("one-pixel", {"pixels": 3}),
}
SLOW = {"jsma", "cw-l2", "one-pixel", "three-pixel"}
FIT_ATTACKS = ("fgsm", "bim-b")

# the validation grid (--validate); {} = the detector's defaults
GRID: list[dict[str, Any]] = [
    {"layers": "penultimate", "subset_size": 50},  # the previous defaults
    {"layers": ["relu2"], "subset_size": 50},
    {"layers": ["relu1"], "subset_size": 50},
    {"layers": ["relu2", "relu3", "relu4"], "subset_size": 50},
    {"layers": ["relu1", "relu2", "relu3", "relu4"], "subset_size": 50},
    {"layers": ["relu1"], "subset_size": 50, "n_sample": 100},
    {"layers": ["relu2"], "subset_size": 10},
    {"layers": ["relu1", "relu2"], "subset_size": 10},
    {"layers": "first", "subset_size": 20},
    {"layers": "first", "subset_size": 10},
    {"layers": "first", "subset_size": 10, "group_by": "source"},
    {"layers": "first", "subset_size": 10, "mode": "vote"},
    {"layers": "first", "subset_size": 5},
    {"layers": "first", "subset_size": 2},  # chosen: the new defaults
    {"layers": "first", "subset_size": 1},
]


def successful(s: AnomalySet, keep: torch.Tensor | None = None) -> ImageSet:
    """The successful attacks (optionally only those whose source index is in `keep`)."""
    ok = s.success if keep is None else s.success & keep
    return ImageSet(f"{s.kind}", s.images[ok], s.labels[ok])


def validate(model: torch.nn.Module, train: ImageSet, n_val: int) -> None:
    """Fingerprint settings scored on attacks of held-out *training* images only."""
    x, y = train.as_float(), train.require_labels()
    n_fit = len(x) - n_val
    fit_clean = ImageSet("fit", x[:n_fit], y[:n_fit])
    sets = {k: make_anomalies(k, model, x, y, seed=0) for k in FIT_ATTACKS}
    val = {}
    for k, s in sets.items():
        held = s.source_index >= n_fit
        val[k] = (x[torch.unique(s.source_index[held & s.success])], s.images[held & s.success])
    print("| setting | fitted on | " + " | ".join(f"val {k}" for k in FIT_ATTACKS) + " |")
    print("|---|---|" + "---|" * len(FIT_ATTACKS))
    for cfg in GRID:
        for kind in FIT_ATTACKS:
            adv = successful(sets[kind], sets[kind].source_index < n_fit)
            det = FingerprintDetector(**cfg).fit(model, fit_clean, anomalies=adv)
            cells = [
                100 * metrics.auroc(det.score(model, c), det.score(model, a))
                for c, a in (val[k] for k in FIT_ATTACKS)
            ]
            row = " | ".join(f"{v:.1f}" for v in cells)
            print(f"| {cfg} | {kind} | {row} |", flush=True)


def time_one_pixel(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Wall and CPU time of one-pixel (defaults) on 100 images vs BIM-b on 1,000, same run."""

    def run(kind: str, n: int) -> None:
        t, c = time.time(), time.process_time()
        s = get_generator(kind).generate(model, x[:n], y[:n], seed=2)
        rate = 100 * float(s.success.float().mean())
        wall, cpu = time.time() - t, time.process_time() - c
        print(f"| {kind} | {n} | {wall:.0f} | {cpu:.1f} | {rate:.1f} % |", flush=True)

    print("| attack | images | wall s | CPU s | success |\n|---|---:|---:|---:|---:|")
    run("bim-b", 1000)
    run("one-pixel", 100)
    run("bim-b", 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default="/work/shared/data")
    ap.add_argument("--n-train", type=int, default=3000, help="training images attacked to fit")
    ap.add_argument("--n-test", type=int, default=1000, help="test images attacked")
    ap.add_argument("--n-slow", type=int, default=300, help="test images for the slow attacks")
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--fused", action="store_true", help="also FRM fused with uniform")
    ap.add_argument("--validate", action="store_true", help="only the validation grid")
    ap.add_argument("--n-val", type=int, default=1000, help="held-out training images")
    ap.add_argument("--time-one-pixel", action="store_true", help="only the one-pixel timing")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)

    model = load_model("lenet-mnist", data_dir=args.data_dir, progress=False)
    train = load_source("mnist", "train", args.data_dir).take(args.n_train, seed=0)
    if args.validate:
        validate(model, train, args.n_val)
        return
    test = load_source("mnist", "test", args.data_dir).take(args.n_test, seed=1)
    x_tr, y_tr = train.as_float(), train.require_labels()
    x_te, y_te = test.as_float(), test.require_labels()
    if args.time_one_pixel:
        time_one_pixel(model, x_te, y_te)
        return

    t0 = time.time()
    detectors: dict[str, Any] = {}
    for kind in FIT_ATTACKS:
        s = make_anomalies(kind, model, x_tr, y_tr, seed=0)
        print(f"# fit set {kind}: {int(s.success.sum())}/{len(s)} successful")
        adv = successful(s)
        detectors[f"FP (fit {kind})"] = FingerprintDetector().fit(model, train, anomalies=adv)
        if kind == "bim-b":
            old = FingerprintDetector(layers="penultimate", subset_size=50)
            detectors["FP old defaults (fit bim-b)"] = old.fit(model, train, anomalies=adv)
    detectors["FP-clean"] = FingerprintDetector(mode="clean").fit(model, train)
    detectors["FRM w=5"] = FeatureResponseDetector(window=5).fit(model, train)
    two = FeatureResponseDetector(window=5, direction="two-sided")
    detectors["FRM w=5 two-sided"] = two.fit(model, train)
    if args.fused:
        fused = FeatureResponseDetector(window=5, fuse_with="uniform")
        detectors["FRM+uniform"] = fused.fit(model, train)
    print(f"# fitted in {time.time() - t0:.0f} s")
    for name in (f"FP (fit {k})" for k in FIT_ATTACKS):
        print(f"# {name} fingerprints per class: {detectors[name].fingerprint_counts().tolist()}")

    rows = []
    for label in args.attacks.split(","):
        kind, params = ATTACKS[label]
        n = args.n_slow if label in SLOW else args.n_test
        t = time.time()
        s = make_anomalies(kind, model, x_te[:n], y_te[:n], seed=1, **params)
        ok = s.success
        sources = torch.unique(s.source_index[s.source_index >= 0])
        clean = x_te[:n][sources]
        adv = s.images[ok]
        row: dict[str, Any] = {
            "attack": label,
            "n": f"{len(sources)} / {int(ok.sum())}",
            "success": float(ok.float().mean()),
        }
        for name, det in detectors.items():
            if len(adv) < 2:
                row[name] = float("nan")
                continue
            row[name] = metrics.auroc(det.score(model, clean), det.score(model, adv))
        rows.append(row)
        cells = ", ".join(f"{k} {100 * row[k]:.1f}" for k in detectors)
        print(f"# {label} ({time.time() - t:.0f} s): {cells}", flush=True)

    names = list(detectors)
    print("\n| attack | clean / adv | success | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for r in rows:
        cells = " | ".join(f"{100 * r[k]:.1f}" for k in names)
        print(f"| {r['attack']} | {r['n']} | {100 * r['success']:.0f} % | {cells} |")


if __name__ == "__main__":
    main()
