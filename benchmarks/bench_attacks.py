"""Time the anomaly generators on a zoo model: seconds, success rate and mean norms per kind.

Usage:
    .venv/bin/python benchmarks/bench_attacks.py --model lenet-mnist --n 1000
    .venv/bin/python benchmarks/bench_attacks.py \\
        --kinds fgsm,bim-a,bim-b,jsma,cw-l2,pgd-linf,deepfool

Nothing is cached: every kind is generated afresh (that is what is being timed).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from tripwire.anomalies import get_generator
from tripwire.data import load_source
from tripwire.models.zoo import get_recipe, load_model
from tripwire.progress import set_progress

PAPER_ATTACKS = "fgsm,bim-a,bim-b,jsma,cw-l2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="lenet-mnist")
    ap.add_argument("--n", type=int, default=1000, help="first N test images (attacks)")
    ap.add_argument("--kinds", default=PAPER_ATTACKS, help="comma-separated kinds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--cache-dir", default=None, help="where the zoo model is stored")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    set_progress(False)
    recipe = get_recipe(args.model)
    model = load_model(args.model, data_dir=args.data_dir, cache_dir=args.cache_dir)
    test = load_source(recipe.source, "test", args.data_dir).subset(slice(0, args.n))
    x, y = test.as_float(), test.require_labels()
    print(f"{args.model}: {len(x)} test images, torch threads {torch.get_num_threads()}")
    head = f"{'kind':<18}{'seconds':>9}{'cpu s':>8}{'attacked':>10}{'success':>9}"
    print(head + f"{'linf':>8}{'l2':>8}{'l0':>8}")
    total = total_cpu = 0.0
    for kind in args.kinds.split(","):
        gen = get_generator(kind)
        if not gen.needs_inputs:
            gen = get_generator(kind, n=len(x), shape=list(recipe.input_shape))
        t0, c0 = time.perf_counter(), time.process_time()
        s = (
            gen.generate(model, x, y, seed=args.seed)
            if gen.needs_inputs
            else gen.generate(model, None, None, seed=args.seed)
        )
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        total += dt
        total_cpu += cpu
        m = s.summary()
        norms = "".join(f"{m.get('mean_' + k, float('nan')):>8.3f}" for k in ("linf", "l2", "l0"))
        line = f"{kind:<18}{dt:>9.1f}{cpu:>8.1f}{m['n']:>10}{m['success_rate']:>9.1%}{norms}"
        if "target_rate" in m:
            line += f"   (target reached: {m['target_rate']:.1%})"
        print(line, flush=True)
    print(f"{'total':<18}{total:>9.1f}{total_cpu:>8.1f}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
