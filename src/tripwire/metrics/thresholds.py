"""Metrics at an operating point: TNR at TPR (ID positive), FPR at TPR (OOD positive),
best detection accuracy, and the realised rates of a detector with stored thresholds."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from tripwire.metrics._checks import _check_level, _flags, _pair


def _kth_smallest_covering(x: np.ndarray, level: float) -> float:
    """Smallest value t of x with mean(x <= t) >= level (order statistic k = ceil(level*n))."""
    n = x.size
    k = min(n, max(1, math.ceil(level * n - 1e-9 * n)))  # 0.55*100 = 55.000…01: k = 55
    return float(np.partition(x, k - 1)[k - 1])


def tnr_at_tpr(id_scores: Any, anomaly_scores: Any, tpr: float = 0.95) -> float:
    """TNR at a given TPR, **ID as the positive class** (the uniform-framework paper's metric).

    Threshold rule: accept an input iff ``score <= t``, with t the smallest ID score such that at
    least a fraction ``tpr`` of the ID scores are accepted, i.e. the k-th smallest ID score with
    k = ceil(tpr · n_id). Ties: every ID score equal to t is accepted (the realised TPR may exceed
    ``tpr``), and every anomaly score equal to t is accepted too (counted as *not* rejected). This
    is the threshold with TPR >= ``tpr`` that maximises the TNR, and equals taking the first point
    with TPR >= ``tpr`` on sklearn's ROC curve for ID-positive labels and negated scores.

    Returns TNR = fraction of anomaly scores > t (anomalies rejected).

    Examples:
        >>> tnr_at_tpr([1, 2, 3, 4], [3, 5, 6, 7], tpr=0.5)  # t = 2
        1.0
        >>> tnr_at_tpr([1, 2, 3, 4], [3, 5, 6, 7], tpr=0.75)  # t = 3: the anomaly at 3 is accepted
        0.75
    """
    id_s, an_s = _pair(id_scores, anomaly_scores)
    t = _kth_smallest_covering(id_s, _check_level(tpr))
    return float(np.mean(an_s > t))


def tnr_at_tpr95(id_scores: Any, anomaly_scores: Any) -> float:
    """``tnr_at_tpr(id_scores, anomaly_scores, tpr=0.95)``: the paper's "TNR at 95 % TPR".

    Examples:
        >>> tnr_at_tpr95(list(range(20)), [18.5, 30])
        1.0
    """
    return tnr_at_tpr(id_scores, anomaly_scores, tpr=0.95)


def fpr_at_tpr_ood_positive(id_scores: Any, anomaly_scores: Any, tpr: float = 0.95) -> float:
    """FPR at a given TPR with the **anomaly (OOD) as positive** (OpenOOD / pytorch-ood "FPR95").

    Flag an input iff ``score >= t``, with t the largest anomaly score such that at least a fraction
    ``tpr`` of the anomalies are flagged (the k-th largest, k = ceil(tpr · n_anom)); returns the
    fraction of ID scores >= t (ID inputs wrongly flagged; ties with t count as flagged). Equals
    taking the first point with TPR >= ``tpr`` on sklearn's ROC curve (anomaly label 1). Not the
    paper's metric: there the 95 % is of ID inputs, see ``tnr_at_tpr``.

    Examples:
        >>> fpr_at_tpr_ood_positive([1, 2, 3, 4], [2, 5, 6, 7], tpr=1.0)  # t = 2
        0.75
    """
    id_s, an_s = _pair(id_scores, anomaly_scores)
    t = -_kth_smallest_covering(-an_s, _check_level(tpr))
    return float(np.mean(id_s >= t))


def fpr_at_tpr95_ood_positive(id_scores: Any, anomaly_scores: Any) -> float:
    """``fpr_at_tpr_ood_positive(id_scores, anomaly_scores, tpr=0.95)`` (OpenOOD's "FPR@95").

    Examples:
        >>> fpr_at_tpr95_ood_positive([0, 1, 2], [1.5, 3, 4])
        0.3333333333333333
    """
    return fpr_at_tpr_ood_positive(id_scores, anomaly_scores, tpr=0.95)


def detection_accuracy(id_scores: Any, anomaly_scores: Any) -> float:
    """Best balanced accuracy over all thresholds (ODIN / Mahalanobis "detection accuracy").

    Detection accuracy = 1 − min_t [0.5·P_in(score > t) + 0.5·P_out(score <= t)]
    = max_t 0.5·(TPR_ID(t) + TNR(t)), over every threshold t including ±inf (so it is >= 0.5).
    The ODIN/Mahalanobis code scans a fixed grid of t; here every distinct score is tried, which
    is the exact optimum (never below the grid value).

    Examples:
        >>> detection_accuracy([1, 2, 3], [2.5, 4, 5])  # best at t = 2 or t = 3
        0.8333333333333334
    """
    id_s, an_s = _pair(id_scores, anomaly_scores)
    t = np.unique(np.r_[id_s, an_s])
    tpr = np.searchsorted(np.sort(id_s), t, side="right") / id_s.size  # P(id <= t)
    tnr = 1.0 - np.searchsorted(np.sort(an_s), t, side="right") / an_s.size  # P(anom > t)
    return float(max(0.5, np.max(0.5 * (tpr + tnr))))


class Rates(NamedTuple):
    """Realised rates of a thresholded detector, ID as positive (the paper's convention)."""

    tpr: float  #: fraction of ID inputs accepted (not flagged)
    tnr: float  #: fraction of anomalies rejected (flagged)


def rates_at_thresholds(id_flags: Any, anomaly_flags: Any) -> Rates:
    """Realised TPR / TNR of a fitted detector from its ``is_anomaly`` flags (``predict`` output).

    TPR = fraction of ID inputs *not* flagged, TNR = fraction of anomalies flagged. With per-class
    thresholds these pooled rates already equal the paper's class-weighted Σ γ_i·TPR_i (γ_i = share
    of ID inputs predicted as i) and Σ γ_i·TNR_i (γ_i = share of anomalies predicted as i).

    Examples:
        >>> rates_at_thresholds([False, False, True, False], [True, False])
        Rates(tpr=0.75, tnr=0.5)
    """
    id_f, an_f = _flags(id_flags, "id_flags"), _flags(anomaly_flags, "anomaly_flags")
    return Rates(tpr=float(np.mean(~id_f)), tnr=float(np.mean(an_f)))
