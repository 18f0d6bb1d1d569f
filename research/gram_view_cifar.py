"""How the Gram view enters `uniform-fusion`'s one-sided sum, on the CIFAR-10 models' validation
scores that `research/select_default_cifar.py run` stored (no test set): without it, raw, as
log1p of the deviation, capped at c (z ≤ c), and all views as conformal p-values combined by
Fisher's method. Prints the total shortfall below best − 1.0 and the AUROC per validation set.

Usage (from research/): python gram_view_cifar.py SELECT_OUT [SELECT_OUT ...]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from select_default_cifar import COMPONENTS, _standardise

from tripwire import metrics

GRAM = "gram:orders=[1];layers=deepest"
CAPS = (1.0, 2.0, 3.0, 5.0, 10.0)


def auroc(id_scores: np.ndarray, anomaly_scores: np.ndarray) -> float:
    return 100 * metrics.auroc(torch.tensor(id_scores), torch.tensor(anomaly_scores))


def conformal(calib: np.ndarray, calib_pred: np.ndarray, x: np.ndarray, pred: np.ndarray, k: int):  # type: ignore[no-untyped-def]
    """−log of the conformal p-value of each score among its predicted class's calibration
    scores (all of them for classes with fewer than 20)."""
    out = np.empty(len(x))
    for c in range(k):
        own = calib_pred == c
        ranked = np.sort(calib[own] if own.sum() >= 20 else calib)
        mask = pred == c
        at_least = len(ranked) - np.searchsorted(ranked, x[mask], side="left")
        out[mask] = -np.log((1 + at_least) / (len(ranked) + 1))
    return out


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
    z, p = {}, {}
    for name, v in views.items():
        center, scale = _standardise(v["calibration"], pred["calibration"], k)
        z[name] = {key: (v[key] - center[pred[key]]) / scale[pred[key]] for key in keys}
        p[name] = {
            key: conformal(v["calibration"], pred["calibration"], v[key], pred[key], k)
            for key in keys
        }
    base = (*COMPONENTS, "vim")

    def sum_plus(views_: tuple[str, ...], cap: float | None = None) -> Callable[[str], np.ndarray]:
        def fused(key: str) -> np.ndarray:
            parts = [np.clip(z[v][key], 0, cap if v == "gram" else None) for v in views_]
            return np.sum(parts, axis=0)

        return fused

    variants = {
        "no Gram view": sum_plus(base),
        "raw": sum_plus((*base, "gram")),
        "log1p": sum_plus((*base, "log1p-gram")),
        **{f"capped at {c:g}": sum_plus((*base, "gram"), c) for c in CAPS},
        "Fisher, conformal p": lambda key: np.sum([p[v][key] for v in (*base, "gram")], axis=0),
    }
    print(f"{folder}: {len(references)} references")
    for name, fused in variants.items():
        score = {key: fused(key) for key in keys}
        a = {s: auroc(score["id"], score[s]) for s in sets}
        shortfall = sum(max(0.0, best[s] - 1.0 - a[s]) for s in sets)
        print(f"  {name}: shortfall {shortfall:.2f}, mean {np.mean(list(a.values())):.2f}")
        print("    " + " ".join(f"{s}={a[s]:.2f}" for s in sets))


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        compare(Path(arg))
