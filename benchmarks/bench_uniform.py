"""Speed of the uniform detector (or `uniform-plus`, tripwire's default) on the zoo LeNet (issue 3
and issue 9 targets).

* scoring throughput relative to the bare LeNet forward pass (target ≥ 0.8×; batch 256 unless
  `--batch-size` says otherwise: the detector's fixed cost per batch weighs less in larger ones);
* fit time on MNIST's 60k training images once the model is trained (target ≤ 10 s).

Usage: python benchmarks/bench_uniform.py [--data-dir DIR] [--repeats 15] [--threads N]
       [--detector uniform|uniform-plus] [--batch-size 256]
Prints a Markdown table for research/notebook.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from tripwire.data import load_source
from tripwire.detectors import create_detector
from tripwire.models.zoo import load_model


def best_of(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--repeats", type=int, default=15, help="interleaved timing rounds")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--max-per-class", type=int, default=2000, help="SVM fit subsample cap (0: all, the paper)"
    )
    ap.add_argument("--detector", default="uniform", choices=["uniform", "uniform-plus"])
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()
    cap = args.max_per_class or None
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model("lenet-mnist", data_dir=args.data_dir)
    train = load_source("mnist", "train", args.data_dir)
    test = load_source("mnist", "test", args.data_dir)
    x = test.as_float()
    bs = args.batch_size
    batches = x.split(bs)

    start = time.perf_counter()
    det = create_detector(args.detector, max_per_class=cap).fit(model, train)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    create_detector(args.detector, layer=det.layer_, max_per_class=cap).fit(model, train)
    fit_fixed_seconds = time.perf_counter() - start

    def bare() -> None:
        with torch.no_grad():
            for b in batches:
                model(b)

    def scored() -> None:
        det.score(model, x, batch_size=bs)

    bare()
    scored()
    # Interleaved rounds: the machine is a shared VM whose speed drifts between seconds, so each
    # round times both back to back and the ratio is taken per round (median over rounds).
    rounds = [(best_of(bare, 1), best_of(scored, 1)) for _ in range(args.repeats)]
    ratios = sorted(tb / ts for tb, ts in rounds)
    t_bare = min(tb for tb, _ in rounds)
    t_score = min(ts for _, ts in rounds)
    n = len(x)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch threads "
        f"{torch.get_num_threads()}, torch {torch.__version__}, load {os.getloadavg()[0]:.1f}"
    )
    print("| measure | value | target |")
    print("|---|---:|---|")
    print(f"| bare LeNet forward, batch {bs} (best round) | {n / t_bare:,.0f} images/s | |")
    sv = int(det.svm_mdl_.support.shape[1])
    label = f"LeNet + {args.detector} score, batch {bs} (≤ {sv} SVs a class; best round)"
    print(f"| {label} | {n / t_score:,.0f} images/s | |")
    spread = f"{ratios[0]:.2f}–{ratios[-1]:.2f}"
    median = ratios[len(ratios) // 2]
    print(f"| ratio, median of {len(ratios)} rounds (range) | {median:.2f}× ({spread}) | ≥ 0.8× |")
    auto = "fit on 60k, layer='auto' (choice + features + 20 SVMs)"
    print(f"| {auto} | {fit_seconds:.1f} s | ≤ 10 s |")
    print(f"| fit on 60k, layer given ({det.layer_}) | {fit_fixed_seconds:.1f} s | |")


if __name__ == "__main__":
    main()
