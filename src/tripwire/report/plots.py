"""Figures for reports: ROC curves and score histograms of ID against each anomaly set.

Drawn with matplotlib's object-oriented `Figure` (no pyplot state, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from tripwire import metrics

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
