"""Figures for reports: ROC curves, score histograms (overall and per predicted class) of ID
against each anomaly set, and a 2-D embedding of layer features.

Drawn with matplotlib's object-oriented `Figure` (no pyplot state, no display needed)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from tripwire import metrics
from tripwire.errors import InvalidInputError

Scores = torch.Tensor | np.ndarray


def roc_figure(
    id_scores: Scores, anomaly_scores: Mapping[str, Scores], path: Path, title: str
) -> Path:
    """ROC curves (anomaly positive) of ID against each anomaly set, with AUROC in the legend."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    for name, scores in anomaly_scores.items():
        fpr, tpr, _ = metrics.roc_curve(id_scores, scores)
        ax.plot(fpr, tpr, label=f"{name} ({100 * metrics.auroc(id_scores, scores):.2f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set(xlabel="ID inputs flagged (FPR)", ylabel="anomalies flagged (TPR)", title=title)
    ax.legend(title="set (AUROC %)", fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def histogram_figure(
    id_scores: Scores, anomaly_scores: Mapping[str, Scores], path: Path, title: str
) -> Path:
    """One panel per anomaly set: histograms of its scores and of the ID scores."""
    n = len(anomaly_scores)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(4 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    id_np = np.asarray(id_scores, dtype=float)
    for ax, (name, scores) in zip(axes.flat, anomaly_scores.items(), strict=False):
        s = np.asarray(scores, dtype=float)
        lo, hi = np.percentile(np.concatenate([id_np, s]), [0.5, 99.5])
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 50)
        ax.hist(np.clip(id_np, lo, hi), bins=bins, alpha=0.6, density=True, label="ID")
        ax.hist(np.clip(s, lo, hi), bins=bins, alpha=0.6, density=True, label=name)
        ax.set(title=name, xlabel="score (higher = more anomalous)")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def per_class_histogram_figure(
    id_scores: Scores,
    id_pred: Scores,
    groups: Mapping[str, tuple[Scores, Scores]],
    path: Path,
    title: str,
    *,
    classes: Sequence[int] | None = None,
    cols: int = 5,
) -> Path:
    """Small multiples, one panel per **predicted** class: the histogram of the ID scores of
    inputs the model assigns to that class against those of each anomaly group.

    The uniform framework (Zhao et al.) calibrates one threshold per predicted class, so a
    detector can separate well overall and still fail inside one class (all CW examples land in
    class 8, say); this figure shows that. Each panel also marks the 95th percentile of the
    class's ID scores (the per-class threshold that keeps 95 % of ID inputs) and gives the counts.
    Bins are shared by all panels (0.5–99.5th percentiles of all scores); densities are per
    group, so small groups stay visible; when anomaly scores reach far beyond the ID spread the
    score axis is asinh-scaled (linear within the ID spread, logarithmic beyond).

    Args:
        id_scores, id_pred: ID scores (higher = more anomalous) and predicted classes, shape (N,).
        groups: name → (scores, predicted classes) of each anomaly group (e.g. one per family).
        path: the PNG to write.
        title: the figure title.
        classes: the classes to draw (default: every class predicted for some input).
        cols: panels per row.

    Examples:
        >>> per_class_histogram_figure(s_id, p_id, {"ood": (s, p)}, Path("pc.png"), "uniform")
        ... # doctest: +SKIP
    """
    id_s = np.asarray(id_scores, dtype=float).ravel()
    id_p = np.asarray(id_pred).astype(int).ravel()
    data = {
        name: (np.asarray(s, dtype=float).ravel(), np.asarray(p).astype(int).ravel())
        for name, (s, p) in groups.items()
    }
    for name, (s, p) in [("ID", (id_s, id_p)), *data.items()]:
        if s.shape != p.shape:
            raise InvalidInputError(
                f"{name}: {len(s)} scores but {len(p)} predicted classes; they must match"
            )
    if classes is None:
        classes = sorted({int(c) for c in id_p} | {int(c) for _, p in data.values() for c in p})
    if not classes:
        raise InvalidInputError("no inputs to draw: every score array is empty")
    every = np.concatenate([id_s, *(s for s, _ in data.values())])
    every = every[np.isfinite(every)]
    lo, hi = np.percentile(every, [0.5, 99.5]) if len(every) else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1
    bins = np.linspace(lo, hi, 40)
    # heavy tails (anomaly scores 100× the ID spread) squash the ID histogram into one bin: then
    # bin and draw on an asinh axis, linear within the ID spread and logarithmic beyond
    finite_id = id_s[np.isfinite(id_s)]
    spread = float(np.subtract(*np.percentile(finite_id, [95, 5]))) if len(finite_id) else 0.0
    asinh = spread > 0 and hi - lo > 20 * spread
    if asinh:
        bins = spread * np.sinh(np.linspace(np.arcsinh(lo / spread), np.arcsinh(hi / spread), 40))
        decades = range(math.ceil(math.log10(spread)), math.floor(math.log10(max(hi, spread))) + 1)
        ticks = [t for t in [0.0, *(10.0**k for k in decades)] if lo <= t <= hi]
    lo, hi = float(bins[0]), float(bins[-1])  # clip to the bins exactly (sinh round-off)
    cols = max(1, min(cols, len(classes)))
    rows = (len(classes) + cols - 1) // cols
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    for ax, c in zip(axes.flat, classes, strict=False):
        mine = id_s[(id_p == c) & np.isfinite(id_s)]
        counts = [f"ID {len(mine)}"]
        if len(mine):
            ax.hist(np.clip(mine, lo, hi), bins=bins, density=True, color="0.6", alpha=0.6)
            ax.axvline(np.percentile(mine, 95), color="k", ls="--", lw=0.8)
        for i, (name, (s, p)) in enumerate(data.items()):
            theirs = s[(p == c) & np.isfinite(s)]
            counts.append(f"{name} {len(theirs)}")
            if len(theirs):
                clipped = np.clip(theirs, lo, hi)
                ax.hist(clipped, bins=bins, density=True, histtype="step", lw=1.3, color=f"C{i}")
        ax.set_title(f"predicted {c}", fontsize=9)
        ax.text(0.98, 0.97, "\n".join(counts), transform=ax.transAxes, ha="right", va="top",
                fontsize=6.5)  # fmt: skip
        if asinh:
            ax.set_xscale("asinh", linear_width=spread)
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    for ax in list(axes.flat)[len(classes) :]:
        ax.axis("off")
    handles: list[Artist] = [Patch(color="0.6", alpha=0.6, label="ID")]
    handles += [Line2D([], [], color=f"C{i}", label=n) for i, n in enumerate(data)]
    handles.append(Line2D([], [], color="k", ls="--", lw=0.8, label="95th pct of class's ID"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    fig.suptitle(f"{title} (score, higher = more anomalous; per predicted class)", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=90)
    return path


def embedding_figure(
    features: Mapping[str, np.ndarray], families: Mapping[str, str], path: Path, title: str
) -> Path:
    """2-D t-SNE (scikit-learn, seeded) of layer features: ID against each anomaly family, one
    panel per family, as the paper's figures 2–6 (which used UMAP)."""
    from sklearn.manifold import TSNE

    names = list(features)
    stacked = np.concatenate([features[n] for n in names])
    stacked = (stacked - stacked.mean(0)) / (stacked.std(0) + 1e-8)
    xy = TSNE(n_components=2, init="pca", random_state=0, perplexity=30).fit_transform(stacked)
    bounds = np.cumsum([0] + [len(features[n]) for n in names])
    coords = {n: xy[bounds[i] : bounds[i + 1]] for i, n in enumerate(names)}
    groups = sorted({families[n] for n in names if n in families})
    fig = Figure(figsize=(4.5 * len(groups), 4.2))
    axes = np.atleast_1d(fig.subplots(1, len(groups)))
    for ax, group in zip(axes, groups, strict=True):
        ax.scatter(*coords["ID"].T, s=4, c="0.7", label="ID", alpha=0.6)
        for n in names:
            if families.get(n) == group:
                ax.scatter(*coords[n].T, s=4, label=n, alpha=0.6)
        ax.set(title=group, xticks=[], yticks=[])
        ax.legend(fontsize=7, markerscale=3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
