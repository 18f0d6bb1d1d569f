"""Benchmark the model zoo's training recipes: test accuracy, wall-clock and CPU time.

Usage:
    .venv/bin/python scripts/bench_training.py lenet-mnist --data-dir ../shared/data
    .venv/bin/python scripts/bench_training.py cnn-digits8 --seeds 0 1 2

Each (model, seed) is trained from scratch with its zoo recipe into a temporary cache (or
--cache-dir); one markdown table row per run is printed, with the machine's load average, since
the machine may be shared and wall-clock time then says little on its own.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch

from tripwire.models.zoo import get_recipe, train_model
from tripwire.progress import set_progress


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", help="zoo model names")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cache-dir", default=None, help="default: a temporary folder")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    set_progress(args.progress)
    cpu = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} CPUs ({cpu})")
    print()
    print("| model | seed | epochs | test accuracy | wall s | CPU s | load avg (start → end) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or tmp
        for name in args.names:
            recipe = get_recipe(name)
            for seed in args.seeds:
                load0 = os.getloadavg()[0]
                wall0, cpu0 = time.perf_counter(), time.process_time()
                _, card = train_model(
                    name,
                    seed=seed,
                    epochs=args.epochs,
                    data_dir=args.data_dir,
                    cache_dir=cache,
                    progress=args.progress,
                    resume=False,
                )
                wall, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
                load1 = os.getloadavg()[0]
                epochs = args.epochs or recipe.epochs
                print(
                    f"| {name} | {seed} | {epochs} | {card['test_accuracy']:.2%} | {wall:.0f} | "
                    f"{cpu_s:.0f} | {load0:.1f} → {load1:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
