"""Threshold-free ranking metrics: AUROC, AUPR-in, AUPR-out, and the ROC curve for plots."""

from __future__ import annotations

from typing import Any

import numpy as np

from tripwire.metrics._checks import _pair


def auroc(id_scores: Any, anomaly_scores: Any) -> float:
    """Area under the ROC curve, anomaly as the positive class.

    AUROC = P(s_anom > s_id) + 0.5·P(s_anom = s_id) (Mann–Whitney U / (n_id·n_anom)), the value
    ``sklearn.metrics.roc_auc_score`` gives with anomaly label 1. Taking ID as positive with the
    negated scores gives the same number: the "AUROC" of the uniform-framework paper's tables.

    Examples:
        >>> auroc([0.1, 0.2], [0.3, 0.2])
        0.875
    """
    from scipy.stats import rankdata  # scipy and scikit-learn load slowly: imported where used

    id_s, an_s = _pair(id_scores, anomaly_scores)
    ranks = rankdata(np.concatenate([id_s, an_s]))  # average ranks handle ties
    n_id, n_an = id_s.size, an_s.size
    u = ranks[n_id:].sum() - n_an * (n_an + 1) / 2.0
    return float(u / (n_id * n_an))


def aupr_out(id_scores: Any, anomaly_scores: Any) -> float:
    """Area under the precision–recall curve, **anomaly** as positive (high score = positive).

    Average-precision definition, AP = Σ_n (R_n − R_{n−1})·P_n, as ``average_precision_score``
    (whose float sum can round to just above 1, here clipped to 1).

    Examples:
        >>> aupr_out([0.1, 0.2], [0.3, 0.4])
        1.0
    """
    from sklearn.metrics import average_precision_score

    id_s, an_s = _pair(id_scores, anomaly_scores)
    y = np.r_[np.zeros(id_s.size), np.ones(an_s.size)]
    return min(1.0, float(average_precision_score(y, np.r_[id_s, an_s])))


def aupr_in(id_scores: Any, anomaly_scores: Any) -> float:
    """Area under the precision–recall curve with **ID** as positive (low score = positive).

    Average precision (as ``average_precision_score``, clipped to 1 as `aupr_out`) of the labels
    "is ID" ranked by −score.

    Examples:
        >>> aupr_in([0.1, 0.2], [0.3, 0.4])
        1.0
    """
    from sklearn.metrics import average_precision_score

    id_s, an_s = _pair(id_scores, anomaly_scores)
    y = np.r_[np.ones(id_s.size), np.zeros(an_s.size)]
    return min(1.0, float(average_precision_score(y, -np.r_[id_s, an_s])))


def roc_curve(
    id_scores: Any, anomaly_scores: Any, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve for plotting, anomaly as positive: ``(fpr, tpr, thresholds)`` as sklearn's.

    ``fpr[j]`` = fraction of ID scores >= ``thresholds[j]``, ``tpr[j]`` = same for anomalies.

    Examples:
        >>> fpr, tpr, thr = roc_curve([0.1, 0.2], [0.3, 0.4])
        >>> float(np.trapezoid(tpr, fpr))
        1.0
    """
    from sklearn.metrics import roc_curve as sklearn_roc_curve

    id_s, an_s = _pair(id_scores, anomaly_scores)
    y = np.r_[np.zeros(id_s.size), np.ones(an_s.size)]
    fpr, tpr, thr = sklearn_roc_curve(y, np.r_[id_s, an_s], drop_intermediate=drop_intermediate)
    return fpr, tpr, thr
