"""Which early layer would have been the uniform detector's MDL? A diagnostic, not a selection.

`UniformDetector(layer="auto")` ranks every candidate layer by the mean AUROC of its class-wise
one-class SVM between held-out ID images and proxies made from ID images (`tripwire.detectors.mdl`).
Zhao et al. ranked them on a known OOD set instead (TinyImageNet for their CIFAR-10 models). This
script prints, for every candidate layer, the AUROC of that same SVM score on the proxies *and* on
named evaluation sets, so that one can see how far the proxies' choice is from the layer the
evaluation sets would have picked. It reads the test sets, so nothing it prints may be used to
choose a setting: it only explains a gap (research/notebook.md, "CIFAR-10").

``--held-from train`` makes the proxies (and the ID side) from held-out *training* images, split
off as the detector splits its fit data (10 %, seeded), instead of from test images: the
detector's own situation, in which the model may have memorised those images.

Usage: python research/diagnose_mdl.py [--model resnet-cifar10] [--data-dir DIR]
       [--sets tinyimagenet-resize tinyimagenet-crop] [--fit 3000] [--held 1000] [--seed 0]
       [--held-from test|train] [--pooling mean] [--threads N]
"""

from __future__ import annotations

import argparse
import os

import torch

from tripwire.data import load_source
from tripwire.detectors.mdl import TIE, candidate_layers, choose_layer
from tripwire.detectors.proxies import make_proxies
from tripwire.models.zoo import get_recipe, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet-cifar10")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--sets", nargs="+", default=["tinyimagenet-resize", "tinyimagenet-crop"])
    ap.add_argument("--fit", type=int, default=3000, help="training images fitting the SVMs")
    ap.add_argument("--held", type=int, default=1000, help="ID held-out images (and per set)")
    ap.add_argument(
        "--held-from",
        default="test",
        choices=["test", "train"],
        help="ID held-out images from the test set, or from training images split off as the "
        "detector does",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pooling", default="mean", choices=["mean", "max", "meanstd"])
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, data_dir=args.data_dir).eval()
    dataset = get_recipe(args.model).source
    train = load_source(dataset, "train", args.data_dir)
    if args.held_from == "train":
        fit_set, held_set = train.split(0.1, seed=args.seed)
        fit_x = fit_set.take(args.fit, seed=args.seed).as_float()
        held_x = held_set.take(args.held, seed=args.seed + 1).as_float()
    else:
        fit_x = train.take(args.fit, seed=args.seed).as_float()
        held_x = load_source(dataset, "test", args.data_dir).take(args.held, seed=args.seed)
        held_x = held_x.as_float()
    proxies = make_proxies(held_x, seed=args.seed)
    evaluation = {
        name: load_source(name, "test", args.data_dir).take(args.held, seed=args.seed).as_float()
        for name in args.sets
    }
    with torch.no_grad():
        num_classes = int(model(held_x[:1]).shape[1])
        layers = candidate_layers(model, fit_x, args.pooling)
        choice = choose_layer(
            model,
            fit_x,
            held_x,
            {**proxies, **evaluation},
            layers,
            num_classes=num_classes,
            nu=0.1,
            gamma="scale",
            pooling=args.pooling,
        )
    by_proxies = {
        layer: sum(per[p] for p in proxies) / len(proxies) for layer, per in choice.per_set.items()
    }
    best_proxy = max(by_proxies.values())
    chosen = next(layer for layer in layers if by_proxies[layer] >= best_proxy - TIE)
    print(
        f"{args.model}: {len(layers)} candidate layers, pooling {args.pooling}, SVMs fitted on "
        f"{len(fit_x)} training images, ID side {len(held_x)} {args.held_from} images; load "
        f"{os.getloadavg()[0]:.1f}\n"
    )
    print(
        f"Ranked on the proxies as `layer='auto'` ranks (here made from {args.held} held-out "
        f"{args.held_from} images; the detector makes them from held-out training images): "
        f"**{chosen}**."
    )
    for name in args.sets:
        top = max(layers, key=lambda layer: choice.per_set[layer][name])
        print(f"Best layer on {name} (test set; diagnostic only): **{top}**.")
    print("\n| layer | proxies (mean AUROC %) | " + " | ".join(args.sets) + " |")
    print("|---|---:|" + "---:|" * len(args.sets))
    for layer in layers:
        mark = " ←" if layer == chosen else ""
        cells = " | ".join(f"{100 * choice.per_set[layer][name]:.1f}" for name in args.sets)
        print(f"| {layer}{mark} | {100 * by_proxies[layer]:.1f} | {cells} |")


if __name__ == "__main__":
    main()
