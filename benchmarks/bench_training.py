"""Benchmark the model zoo's training recipes: test accuracy, wall-clock and CPU time.

Usage:
    .venv/bin/python benchmarks/bench_training.py lenet-mnist --data-dir ../shared/data
    .venv/bin/python benchmarks/bench_training.py cnn-digits8 --seeds 0 1 2
    .venv/bin/python benchmarks/bench_training.py resnet-cifar10 vgg16-cifar10 --step-cost 5

`--step-cost N` only times N SGD steps of each recipe's architecture on random inputs of its batch
size (CPU seconds of this process, the first step dropped; bfloat16 autocast where the recipe and
the CPU allow it) and projects the CPU hours of the whole recipe — to plan a long CPU training
(the CIFAR models) before starting it.

Otherwise each (model, seed) is trained from scratch with its zoo recipe into a temporary cache (or
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

from tripwire.models.training import bf16_supported
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
    parser.add_argument("--step-cost", type=int, default=0, metavar="N", help="time N steps only")
    args = parser.parse_args()
    set_progress(args.progress)
    cpu = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} CPUs ({cpu})")
    print()
    if args.step_cost:
        step_costs(args.names, args.step_cost, args.epochs)
        return
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


def step_costs(names: list[str], steps: int, epochs: int | None) -> None:
    """Print the CPU seconds per training step and the projected CPU hours of each recipe."""
    print("| model | batch | CPU s / step | CPU h / epoch (50k images) | epochs | CPU h | load |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        recipe = get_recipe(name)
        model = recipe.build(0).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.rand(recipe.batch_size, *recipe.input_shape)
        y = torch.randint(0, recipe.num_classes, (recipe.batch_size,))
        autocast = recipe.mixed_precision and bf16_supported(torch.device("cpu"))
        costs = []
        for _ in range(steps + 1):
            start = time.process_time()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            costs.append(time.process_time() - start)
        step = sorted(costs[1:])[len(costs[1:]) // 2]
        per_epoch = step * 50_000 / recipe.batch_size / 3600
        n_epochs = epochs or recipe.epochs
        print(
            f"| {name} | {recipe.batch_size} | {step:.2f} | {per_epoch:.3f} | {n_epochs} | "
            f"{per_epoch * n_epochs:.1f} | {os.getloadavg()[0]:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
