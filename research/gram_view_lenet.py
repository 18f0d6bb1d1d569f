"""The Gram view's cap inside `uniform-fusion` on LeNet-5's validation sets (those of
`research/select_uniform_plus.py`: held-out MNIST training images, seeds 0–2; no test set).

Fits `uniform-fusion` with the Gram view once per seed, standardises its raw views on the
detector's held-out fit images (as that script does) and prints the AUROC per set, the mean over
seeds, for no Gram view, the raw view and the view capped at 1, 2, 3, 5; the shortfall is
against the targets of that script's run (best reference − 0.5, research/notebook.md).

Usage (from research/): TRIPWIRE_DATA=../../shared/data python gram_view_lenet.py
"""

from __future__ import annotations

import numpy as np
import torch
from select_uniform_plus import validation_sets

from tripwire import metrics
from tripwire.data import load_source
from tripwire.detectors.uniform_fusion import UniformFusionDetector
from tripwire.models.zoo import load_model

# best reference − 0.5 on each set, from the select_uniform_plus.py run of the notebook
TARGET = {
    "pixel-shuffle": 99.50, "tile-shuffle": 99.23, "random-sign": 99.43, "mixup": 96.43,
    "smooth-noise": 99.50, "fgsm-train": 99.45, "bim-b-train": 99.31, "deepfool-train": 99.03,
    "cw-train": 98.92, "font-letters-kz": 95.07, "fooling-gradient": 99.50,
}  # fmt: skip
# columns of the raw scores: mdl, logit SVM, msp, margin, vim, gram
VARIANTS = {"no Gram view": (5, None), "raw": (6, None)} | {
    f"capped at {c:g}": (6, c) for c in (1.0, 2.0, 3.0, 5.0)
}


def main() -> None:
    torch.set_num_threads(1)
    results: dict[str, dict[str, list[float]]] = {v: {} for v in VARIANTS}
    for seed in (0, 1, 2):
        model = load_model("lenet-mnist", seed=seed)
        train = load_source("mnist", "train").take(26000, seed=seed)
        fit, held = train.split(6000 / 26000, seed=seed)
        sets = validation_sets(model, held, None, seed)
        id_x = held.as_float()[2000:4000]
        extras = ("msp", "margin", "vim", "gram")
        det = UniformFusionDetector(extras=extras, seed=seed).fit(model, fit)
        _, held_set = fit.split(det.holdout_fraction, seed=det.seed)
        raw_held, pred_held = det.raw_scores_of(model, held_set)
        raw = {name: det.raw_scores_of(model, x) for name, x in {"id": id_x, **sets}.items()}
        for name, (n_views, cap) in VARIANTS.items():
            det._fit_normalisation(raw_held[:, :n_views], pred_held)
            scores = {}
            for key, (r, p) in raw.items():
                z = ((r[:, :n_views] - det.center_[p]) / det.scale_[p]).clamp_min(0)
                if cap is not None:
                    z[:, 5] = z[:, 5].clamp(max=cap)
                scores[key] = z.sum(dim=1)
            for s in sets:
                auc = 100 * metrics.auroc(scores["id"], scores[s])
                results[name].setdefault(s, []).append(auc)
    names = list(TARGET)
    print("| Gram view | " + " | ".join(names) + " | mean | shortfall |")
    for name, per_set in results.items():
        means = [float(np.mean(per_set[s])) for s in names]
        shortfall = sum(max(0.0, TARGET[s] - m) for s, m in zip(names, means, strict=True))
        cells = " | ".join(f"{m:.2f}" for m in means)
        print(f"| {name} | {cells} | {np.mean(means):.2f} | {shortfall:.2f} |")


if __name__ == "__main__":
    main()
