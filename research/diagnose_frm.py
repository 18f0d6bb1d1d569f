"""Why does the feature-response detector see nothing on a model? A diagnostic of its statistic.

The detector (`tripwire.detectors.feature_response`) scores the mean local spatial entropy of an
input's guided-backprop response map. The entropy can only separate inputs if the maps differ in
how concentrated they are. This prints, for ID test images and two noise sets made here
(N(0.5, 1) and U[0, 1], clipped), the share of exactly-zero pixels of the maps, the mean local
entropy (and its maximum, log2 w²) and the AUROC of the raw entropy, ID against each noise set.

Usage: python research/diagnose_frm.py [--model resnet-cifar10] [--n 200] [--window 5]
       [--data-dir DIR] [--seed 0] [--threads N]
"""

from __future__ import annotations

import argparse
import math

import torch

from tripwire.data import load_source
from tripwire.detectors.feature_response import local_entropy
from tripwire.guided_backprop import guided_backprop_and_logits
from tripwire.metrics import auroc
from tripwire.models.zoo import get_recipe, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet-cifar10")
    ap.add_argument("--n", type=int, default=200, help="images per set")
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, data_dir=args.data_dir).eval()
    recipe = get_recipe(args.model)
    test = load_source(recipe.source, "test", args.data_dir).take(args.n, seed=args.seed)
    g = torch.Generator().manual_seed(args.seed)
    shape = (args.n, *recipe.input_shape)
    sets = {
        "ID test": test.as_float(),
        "gaussian N(0.5, 1)": (0.5 + torch.randn(shape, generator=g)).clamp(0, 1),
        "uniform U[0, 1]": torch.rand(shape, generator=g),
    }
    entropy = {}
    print(
        f"{args.model}, {args.n} images per set, window {args.window} "
        f"(maximum entropy log2 {args.window}² = {math.log2(args.window**2):.2f} bits)\n"
    )
    print("| set | zero pixels of the maps | mean local entropy (bits) | AUROC vs ID |")
    print("|---|---:|---:|---:|")
    for name, x in sets.items():
        response, _ = guided_backprop_and_logits(model, x)
        entropy[name] = local_entropy(response, args.window)
        zero = float((response == 0).float().mean())
        s = entropy[name]
        vs_id = "" if name == "ID test" else f"{100 * auroc(entropy['ID test'], s):.1f}"
        print(f"| {name} | {100 * zero:.1f} % | {s.mean():.3f} ± {s.std():.3f} | {vs_id} |")


if __name__ == "__main__":
    main()
