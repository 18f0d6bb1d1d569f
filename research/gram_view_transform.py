"""The Gram view inside `uniform-fusion`'s one-sided sum, raw or as log1p of the deviation, from
the validation scores that `research/select_default_cifar.py run` stored (no test set).

Prints, per folder, the total shortfall below best − 1.0 and the AUROC per validation set of
sum+(mdl, logit-svm, msp-log, margin, vim), with the Gram view added raw, and added as log1p.

Usage: python research/gram_view_transform.py SELECT_OUT [SELECT_OUT ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from select_default_cifar import COMPONENTS, _standardise

from tripwire import metrics

GRAM = "gram:orders=[1];layers=deepest"


def auroc(id_scores: np.ndarray, anomaly_scores: np.ndarray) -> float:
    return 100 * metrics.auroc(torch.tensor(id_scores), torch.tensor(anomaly_scores))


def compare(folder: Path) -> None:
    stored = {p.stem: dict(np.load(p)) for p in sorted((folder / "scores").glob("*.npz"))}
    plus = stored["uniform-plus"]
    keys = [k for k in plus if ":" not in k and k not in ("calibration", "meta")]
    sets = [k for k in keys if k != "id"]
    references = [d for d in stored if d != "uniform-fusion" and ":" not in d]
    best = {s: max(auroc(stored[d]["id"], stored[d][s]) for d in references) for s in sets}
    k = int(plus["calibration:pred"].max() + 1)
    every = ["calibration", *keys]
    pred = {key: plus[f"{key}:pred"] for key in every}
    views = {n: {key: plus[f"{key}:raw"][:, i] for key in every} for i, n in enumerate(COMPONENTS)}
    views["vim"] = {key: stored["vim"][key] for key in every}
    views["gram"] = {key: stored[GRAM][key] for key in every}
    views["log1p-gram"] = {key: np.log1p(stored[GRAM][key]) for key in every}
    z = {}
    for name, v in views.items():
        center, scale = _standardise(v["calibration"], pred["calibration"], k)
        z[name] = {key: (v[key] - center[pred[key]]) / scale[pred[key]] for key in keys}
    print(f"{folder}: {len(references)} references")
    for added in ((), ("gram",), ("log1p-gram",)):
        chosen = (*COMPONENTS, "vim", *added)
        score = {key: np.maximum(np.stack([z[v][key] for v in chosen]), 0).sum(0) for key in keys}
        a = {s: auroc(score["id"], score[s]) for s in sets}
        shortfall = sum(max(0.0, best[s] - 1.0 - a[s]) for s in sets)
        cells = " ".join(f"{s}={a[s]:.2f}" for s in sets)
        print(f"+{added or '()'}: shortfall {shortfall:.2f}, mean {np.mean(list(a.values())):.2f}")
        print(f"    {cells}")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        compare(Path(arg))
