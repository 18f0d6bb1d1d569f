"""Scoring throughput of detectors relative to the bare forward pass, and peak memory of the fits.

For each detector: fit on the model's training set (MNIST: 60k; KD+BU, LID and fingerprints also
on FGSM of 5,000 training images), then time `score` over its test set (MNIST: 10k) and, right
before it, the bare model forward over the same images (eval mode, no_grad, same batch size).
``--model resnet-cifar10`` (or ``vgg16-cifar10``) runs the same on CIFAR-10 (FGSM ε = 0.05, the
CIFAR suites' value; the model must be stored or trained: it is never trained here). The ratio
forward_time / score_time is the "fraction of bare forward throughput" (≥ 0.5 required for
non-gradient detectors). Times are the median of `--repeats` runs, forward and detector
interleaved so CPU contention hits both alike.
With ``--shared-features`` the fit images' logits and penultimate features are extracted once
(time and peak RSS printed) and every `FeatureDetector` is fitted on them with `fit_features`, as
`tripwire bench` does; its "fit s" is then the `fit_features` time alone. Scoring is always the
full `score(model, x)` path, forward pass included.
A detector may carry hyper-parameters, ``name:key=value;key=value`` (values parsed as JSON when
they can be, e.g. ``mahalanobis:epsilon=0.0014`` or ``gram:orders=[1];layers=deepest``;
`tripwire.detectors.registry.parse_detector_spec`). The 1-minute
load average is printed with each row.

``--kd-validation N …`` instead measures KD+BU's `max_per_class` on validation data only: the
training images split 55,000 (fit, FGSM ε = 0.3 of 5,000 of them as the regression's anomalies) /
5,000 held out (validation ID vs FGSM ε = 0.3 of the same images); no test set is used.

Usage:
    TRIPWIRE_DATA=../shared/data .venv/bin/python benchmarks/bench_detectors.py \
        msp energy mahalanobis elo lid kd_bu odin mahalanobis:epsilon=0.0014
    TRIPWIRE_DATA=../shared/data .venv/bin/python benchmarks/bench_detectors.py \
        --kd-validation 0 3000 2000 1000 500          # 0 = all (the paper)
    TRIPWIRE_DATA=../shared/data .venv/bin/python benchmarks/bench_detectors.py \
        --model resnet-cifar10 --fit-size 10000 --test-size 2000 msp energy uniform uniform-plus
    TRIPWIRE_DATA=../shared/data .venv/bin/python benchmarks/bench_detectors.py --threads 1 \
        --model resnet-cifar10 --fit-size 50000 --test-size 2000 --shared-features \
        knn vim rmds react ash-b ash-s scale fdbd nnguide maxlogit entropy gen
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import statistics
import time

import torch

from tripwire import metrics
from tripwire.anomalies import get_generator
from tripwire.data import load_source
from tripwire.data.base import ImageSet
from tripwire.detectors import create_detector
from tripwire.detectors.feature_detector import FeatureDetector
from tripwire.detectors.registry import parse_detector_spec
from tripwire.features import extract_features
from tripwire.models.zoo import load_model

# model → (its data source, the FGSM ε of the anomalies that KD+BU, LID and fingerprints fit on)
SETTINGS = {
    "lenet-mnist": ("mnist", 0.3),
    "resnet-cifar10": ("cifar10", 0.05),
    "vgg16-cifar10": ("cifar10", 0.05),
}


def forward_time(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> float:
    t = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size])
    return time.perf_counter() - t


def kd_validation(model: torch.nn.Module, train: ImageSet, caps: list[int], bs: int) -> None:
    """Validation AUROC (held-out training images vs their FGSM) and × fwd per max_per_class."""
    fit, val = train.split(5000 / len(train), seed=5)
    fgsm = get_generator("fgsm", eps=0.3)
    sub = fit.take(5000, seed=1)
    adv_fit = fgsm.generate(model, sub.as_float(), sub.require_labels(), seed=0).images
    vx = val.as_float()
    adv_val = fgsm.generate(model, vx, val.require_labels(), seed=1).images
    print(f"fit {len(fit)} (+{len(adv_fit)} FGSM), validation {len(vx)} vs {len(adv_val)} FGSM")
    for cap in caps:
        det = create_detector("kd_bu", max_per_class=cap or None)
        det.fit(model, fit, anomalies=adv_fit)
        au = metrics.auroc(det.score(model, vx), det.score(model, adv_val))
        ratios = []
        for _ in range(3):
            f = forward_time(model, vx, bs)
            t = time.perf_counter()
            det.score(model, vx, batch_size=bs)
            ratios.append(f / (time.perf_counter() - t))
        print(
            f"max_per_class={cap or None}: validation AUROC {au:.4f}  × fwd "
            f"{statistics.median(ratios):.2f}  load {os.getloadavg()[0]:.1f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("detectors", nargs="*")
    parser.add_argument("--kd-validation", type=int, nargs="+", default=None, metavar="N")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fit-size", type=int, default=60_000)
    parser.add_argument("--test-size", type=int, default=10_000, help="test images scored")
    parser.add_argument("--model", default="lenet-mnist", choices=sorted(SETTINGS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--shared-features", action="store_true", help="fit_features on one pass")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")

    source, fgsm_eps = SETTINGS[args.model]
    trainable = args.model == "lenet-mnist"  # under a minute; the CIFAR models take hours
    model = load_model(args.model, data_dir=args.data_dir, train_if_missing=trainable)
    model.eval()
    train = load_source(source, "train", args.data_dir)
    train = train.take(args.fit_size, seed=0) if args.fit_size < len(train) else train
    if args.kd_validation:
        kd_validation(model, train, args.kd_validation, args.batch_size)
        return
    test = load_source(source, "test", args.data_dir)
    test = (test.take(args.test_size, seed=0) if args.test_size < len(test) else test).as_float()
    print(f"{args.model}: fit on {len(train):,} {source} training images, {len(test):,} scored")
    fgsm = None
    shared = None
    if args.shared_features:
        t = time.perf_counter()
        shared = extract_features(model, train.batches(args.batch_size), penultimate=True)
        shared = dataclasses.replace(shared, labels=train.labels)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"shared feature pass over {len(train):,} images: {time.perf_counter() - t:.1f} s, "
            f"peak RSS so far {rss:.0f} MB, features {tuple(shared.penultimate.shape)}"
        )
    print(
        f"{'detector':<32} {'fit s':>7} {'fwd s':>7} {'score s':>8} {'× fwd':>6} "
        f"{'maxrss MB':>9} {'load':>5}"
    )
    for spec in args.detectors:
        name, params = parse_detector_spec(spec)
        det = create_detector(name, **params)
        anomalies = None
        if det.needs_anomalies:
            if fgsm is None:
                sub = train.take(5000, seed=1)
                fgsm = (
                    get_generator("fgsm", eps=fgsm_eps)
                    .generate(model, sub.as_float(), sub.require_labels(), seed=0)
                    .images
                )
            anomalies = fgsm
        t = time.perf_counter()
        if shared is not None and isinstance(det, FeatureDetector):
            det.fit_features(model, shared)
        else:
            det.fit(model, train, anomalies=anomalies)
        fit_s = time.perf_counter() - t
        fwd, score = [], []
        for _ in range(args.repeats):
            fwd.append(forward_time(model, test, args.batch_size))
            t = time.perf_counter()
            det.score(model, test, batch_size=args.batch_size)
            score.append(time.perf_counter() - t)
        f, s = statistics.median(fwd), statistics.median(score)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        eps = getattr(det, "epsilon_", None)
        note = "" if eps is None else f" ε={eps}"
        note += " (gradient)" if det.needs_gradients or eps else ""
        load = os.getloadavg()[0]
        print(
            f"{spec:<32} {fit_s:7.1f} {f:7.2f} {s:8.2f} {f / s:6.2f} {rss:9.0f} {load:5.1f}{note}",
            flush=True,
        )


if __name__ == "__main__":
    main()
