"""Compare rules for choosing the uniform detectors' MDL, on validation data only.

On the VGG-16 of training seed 2 every proxy-chosen layer was ``relu5_2`` (seeds 0 and 1:
``conv3_2`` / ``conv3_3``), and the default lost its fooling-image detection with it. This
script asks which rule for the choice keeps the default's validation AUROC, whatever the seed of
the choice: for each candidate layer it fits the MDL view (the one-class SVMs of
`UniformPlusDetector`: ``meanstd`` pooling, ν = 0.1, γ = "scale", −log f), fuses it with the
other views of `uniform-fusion` exactly as the detector does (per predicted class, z = (s −
median) / (q99 − median) on the calibration images; the Gram view capped at 5; Σ max(z, 0)), and
scores the validation sets of `select_default_cifar.py` (CIFAR-10 validation images as ID;
anomalies made from training images; no test set). The choice itself is repeated with detector
seeds 0–4 (each seed draws its own hold-out split, subsets and proxies, as `fit` does) and every
candidate layer's per-proxy AUROC is kept, so each rule's choice per seed is computed offline.

Rules compared (`RULES`):

* ``mean`` — today's: the highest mean AUROC over the five proxies, the earliest layer within
  0.005 of it;
* ``median`` — the same with the median over the proxies (one proxy's swing cannot decide);
* ``worst`` — the same with the smallest of the proxies' AUROCs;
* ``early`` — ``mean`` among the first half of the candidate layers (the paper's MDLs are early
  layers; the late ones are seen by the ViM, Gram and logit views already);
* ``early+late`` — two MDL views: ``early``'s layer and the ``mean`` choice among the second
  half.

Rule for the decision, fixed before the first run: per model and validation set the reference is
the best fused AUROC over every single candidate layer; a rule's cost is its total shortfall
below reference − 1.0 point, summed over models, detector seeds and sets; the smallest cost wins,
and a rule within 0.5 of the smallest that chooses fewer distinct layers over the seeds (summed
over models) wins over it; then the simpler rule (the order of `RULES`).

Usage:
    TRIPWIRE_DATA=../shared/data python research/layer_choice_rules.py run \\
        --model vgg16-cifar10 --out lab/layers-vgg16 --threads 1
    python research/layer_choice_rules.py analyse --out lab/layers-vgg16 lab/layers-resnet44
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tripwire import metrics
from tripwire.data import load_source
from tripwire.detectors import create_detector
from tripwire.detectors.mdl import TIE, candidate_layers, choose_layer_from_sets
from tripwire.detectors.ocsvm import ClassConditionalOCSVM
from tripwire.detectors.uniform import _subsample_per_class
from tripwire.detectors.uniform_plus import GRAM_CAP, UniformPlusDetector
from tripwire.features import extract_features
from tripwire.models.zoo import load_model

sys.path.insert(0, str(Path(__file__).parent))
from jsonl_log import append_row, done_keys
from select_default_cifar import _sets, _standardise

CHOICE_SEEDS = (0, 1, 2, 3, 4)
# the views of uniform-fusion besides the MDL, in its column order
OTHER_VIEWS = ("logit-svm", "msp", "margin", "vim", "gram")
AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "mean": statistics.mean,
    "median": statistics.median,
    "worst": min,
}
RULES = ("mean", "median", "worst", "early", "early+late")


def _data(model_name: str) -> dict[str, object]:
    """The splits of `select_default_cifar.run` with seed 0."""
    train = load_source("cifar10", "train")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    validation = load_source("cifar10", "validation")
    vorder = torch.randperm(len(validation), generator=torch.Generator().manual_seed(0))
    return {
        "fit": train.subset(order[:10_000], "cifar10-train[fit]"),
        "attacked": train.subset(order[10_000:12_100], "cifar10-train[attacked]"),
        "calibration": validation.subset(vorder[:3000], "cifar10-validation[calibration]"),
        "id": validation.subset(vorder[3000:5000], "cifar10-validation[id]"),
    }


def run(args: argparse.Namespace) -> None:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, train_if_missing=False)
    data = _data(args.model)
    fit = data["fit"]
    sets_file = out / "sets.pt"
    if sets_file.exists():
        sets = torch.load(sets_file)
    else:
        start = time.perf_counter()
        sets = _sets(model, data["attacked"], 0)
        torch.save(sets, sets_file)
        print(f"validation sets made in {time.perf_counter() - start:.0f} s", flush=True)
    evaluated = {
        "calibration": data["calibration"].as_float(),
        "id": data["id"].as_float(),
        **sets,
    }
    fit_set, _ = fit.split(0.1, seed=0)  # as UniformDetector's fit with seed 0
    candidates = candidate_layers(model, fit_set.as_float(slice(0, 2)), "meanstd")
    (out / "candidates.json").write_text(json.dumps(candidates))

    # the other views: one uniform-fusion fitted and calibrated as in the selection
    views_file = out / "views.npz"
    if not views_file.exists():
        start = time.perf_counter()
        det = create_detector("uniform-fusion", seed=0, layer=candidates[0])
        det.fit(model, fit).calibrate(model, data["calibration"])
        assert isinstance(det, UniformPlusDetector)
        stored = {}
        for key, x in evaluated.items():
            raw, pred = det.raw_scores_of(model.eval(), x)
            stored[key], stored[f"{key}:pred"] = raw[:, 1:].numpy(), pred.numpy()
        np.savez_compressed(views_file, **stored)
        print(f"views: {time.perf_counter() - start:.0f} s", flush=True)

    # every candidate layer's MDL view
    mdl_dir = out / "mdl"
    mdl_dir.mkdir(exist_ok=True)
    todo = [layer for layer in candidates if not (mdl_dir / f"{layer}.npz").exists()]
    if todo:
        start = time.perf_counter()
        k = 10
        fit_feats = extract_features(model, fit_set.batches(512), todo, "meanstd")
        keep = _subsample_per_class(fit_feats.predicted, k, 2000, 0)
        feats = {
            key: extract_features(model, x.split(512), todo, "meanstd").layers
            for key, x in evaluated.items()
        }
        print(f"features of {len(todo)} layers: {time.perf_counter() - start:.0f} s", flush=True)
        views = np.load(views_file)
        for layer in todo:
            svm = ClassConditionalOCSVM.fit(
                fit_feats.layers[layer][keep], fit_feats.predicted[keep], k, nu=0.1, gamma="scale"
            )
            stored = {
                key: svm.score(f[layer], torch.from_numpy(views[f"{key}:pred"]), True).numpy()
                for key, f in feats.items()
            }
            np.savez_compressed(mdl_dir / f"{layer}.npz", **stored)
            print(f"{layer}: {time.perf_counter() - start:.0f} s", flush=True)

    # the choice with five detector seeds: every candidate's per-proxy AUROC
    choices = out / "choices.jsonl"
    done = done_keys(choices, ("seed",))
    for seed in CHOICE_SEEDS:
        if (seed,) in done:
            continue
        start = time.perf_counter()
        fit_s, held_s = fit.split(0.1, seed=seed)
        choice = choose_layer_from_sets(
            model, fit_s, held_s, None, seed=seed, num_classes=10, nu=0.1, gamma="scale",
            pooling="meanstd",
        )  # fmt: skip
        row = {"seed": seed, "layer": choice.layer, "per_set": choice.per_set}
        row["seconds"] = round(time.perf_counter() - start)
        append_row(choices, row)


def _rule_layers(rule: str, per_set: dict[str, dict[str, float]], order: list[str]) -> list[str]:
    """The MDL layer(s) that `rule` chooses from every candidate's per-proxy AUROCs."""

    def best(aggregate: str, layers: list[str]) -> str:
        value = {layer: AGGREGATES[aggregate](list(per_set[layer].values())) for layer in layers}
        top = max(value.values())
        return next(layer for layer in layers if value[layer] >= top - TIE)

    half = len(order) // 2
    if rule in AGGREGATES:
        return [best(rule, order)]
    if rule == "early":
        return [best("mean", order[:half])]
    return [best("mean", order[:half]), best("mean", order[half:])]


def _fused_auroc(folder: Path, layers: list[str], cache: dict[str, dict[str, np.ndarray]]) -> dict:
    """Validation AUROC % per set of uniform-fusion with the MDL view(s) of `layers`."""
    views = np.load(folder / "views.npz")
    keys = [k for k in views.files if ":" not in k]
    sets = [k for k in keys if k not in ("calibration", "id")]
    pred = {key: views[f"{key}:pred"] for key in keys}
    columns = {name: {key: views[key][:, i] for key in keys} for i, name in enumerate(OTHER_VIEWS)}
    for layer in layers:
        if layer not in cache:
            cache[layer] = dict(np.load(folder / "mdl" / f"{layer}.npz"))
        columns[f"mdl:{layer}"] = cache[layer]
    z = []
    for name, v in columns.items():
        center, scale = _standardise(v["calibration"], pred["calibration"], 10)
        zv = {key: (v[key] - center[pred[key]]) / scale[pred[key]] for key in keys}
        if name == "gram":
            zv = {key: np.minimum(value, GRAM_CAP) for key, value in zv.items()}
        z.append(zv)
    score = {key: sum(np.maximum(zv[key], 0) for zv in z) for key in keys}
    return {s: 100 * metrics.auroc(torch.tensor(score["id"]), torch.tensor(score[s])) for s in sets}


def analyse(args: argparse.Namespace) -> None:
    lines: list[str] = []
    totals = {rule: 0.0 for rule in RULES}
    distinct = {rule: 0 for rule in RULES}
    for folder in args.out:
        order = json.loads((folder / "candidates.json").read_text())
        cache: dict[str, dict[str, np.ndarray]] = {}
        per_layer = {layer: _fused_auroc(folder, [layer], cache) for layer in order}
        sets = list(next(iter(per_layer.values())))
        reference = {s: max(a[s] for a in per_layer.values()) for s in sets}
        choices = [json.loads(line) for line in (folder / "choices.jsonl").read_text().splitlines()]
        lines += [f"## {folder.name}", ""]
        seeds = ", ".join(str(c["seed"]) for c in choices)
        header = f"| rule | layers chosen (seeds {seeds}) | shortfall | mean | "
        lines.append(header + " | ".join(sets) + " |")
        lines.append("|---" * (4 + len(sets)) + "|")
        lines.append(
            "| best single layer | | | "
            + f"{np.mean(list(reference.values())):.2f} | "
            + " | ".join(f"{reference[s]:.2f}" for s in sets)
            + " |"
        )
        for rule in RULES:
            picks = [_rule_layers(rule, c["per_set"], order) for c in choices]
            results = [_fused_auroc(folder, layers, cache) for layers in picks]
            shortfall = sum(max(0.0, reference[s] - 1.0 - r[s]) for r in results for s in sets)
            totals[rule] += shortfall
            distinct[rule] += len({tuple(p) for p in picks})
            mean = {s: float(np.mean([r[s] for r in results])) for s in sets}
            lines.append(
                f"| {rule} | {'; '.join('+'.join(p) for p in picks)} | {shortfall:.2f} | "
                f"{np.mean(list(mean.values())):.2f} | "
                + " | ".join(f"{mean[s]:.2f}" for s in sets)
                + " |"
            )
        lines += ["", "Every candidate layer as the one MDL view:", ""]
        lines.append("| layer | mean | " + " | ".join(sets) + " |")
        lines.append("|---" * (2 + len(sets)) + "|")
        for layer, a in per_layer.items():
            cells = " | ".join(f"{a[s]:.2f}" for s in sets)
            lines.append(f"| {layer} | {np.mean(list(a.values())):.2f} | {cells} |")
        lines.append("")
    lines += ["## All models", "", "| rule | total shortfall | distinct choices |"]
    lines.append("|---|---:|---:|")
    lines += [f"| {rule} | {totals[rule]:.2f} | {distinct[rule]} |" for rule in RULES]
    smallest = min(totals.values())
    near = [rule for rule in RULES if totals[rule] <= smallest + 0.5]
    winner = min(near, key=lambda rule: (distinct[rule], RULES.index(rule)))
    lines += ["", f"Chosen by the rule: **{winner}**", ""]
    text = "\n".join(lines)
    if args.report:
        args.report.write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    r = sub.add_parser("run")
    r.add_argument("--model", default="vgg16-cifar10")
    r.add_argument("--threads", type=int)
    r.add_argument("--out", type=Path, required=True)
    a = sub.add_parser("analyse")
    a.add_argument("--out", type=Path, nargs="+", required=True)
    a.add_argument("--report", type=Path)
    args = parser.parse_args()
    run(args) if args.step == "run" else analyse(args)


if __name__ == "__main__":
    main()
