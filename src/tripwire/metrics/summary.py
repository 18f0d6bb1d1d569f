"""All metrics in one dict with stable keys, for benchmark tables."""

from __future__ import annotations

from typing import Any

from tripwire.errors import InvalidInputError
from tripwire.metrics._checks import _pair
from tripwire.metrics.curves import aupr_in, aupr_out, auroc
from tripwire.metrics.per_class import Metric, Weighting, class_breakdown
from tripwire.metrics.thresholds import (
    detection_accuracy,
    fpr_at_tpr95_ood_positive,
    tnr_at_tpr95,
)

_POOLED: dict[str, Metric] = {
    "auroc": auroc,
    "aupr_in": aupr_in,
    "aupr_out": aupr_out,
    "tnr_at_tpr95": tnr_at_tpr95,
    "fpr_at_tpr95_ood_positive": fpr_at_tpr95_ood_positive,
    "detection_accuracy": detection_accuracy,
}


def summarize(
    id_scores: Any,
    anomaly_scores: Any,
    id_pred: Any | None = None,
    anomaly_pred: Any | None = None,
    weighting: Weighting = "anomaly",
) -> dict[str, float]:
    """All metrics at once, with stable keys, for benchmark tables.

    Keys: ``auroc``, ``aupr_in``, ``aupr_out``, ``tnr_at_tpr95``, ``fpr_at_tpr95_ood_positive``,
    ``detection_accuracy``; with predictions, also each of them with the suffix
    ``_class_weighted`` (see ``class_weighted``) and ``class_weighted_skipped_share``.

    Examples:
        >>> summarize([0.1, 0.2], [0.3, 0.4])["auroc"]
        1.0
    """
    id_s, an_s = _pair(id_scores, anomaly_scores)
    out = {name: fn(id_s, an_s) for name, fn in _POOLED.items()}
    if (id_pred is None) != (anomaly_pred is None):
        raise InvalidInputError("summarize: give both id_pred and anomaly_pred, or neither")
    if id_pred is not None:
        for name, fn in _POOLED.items():
            b = class_breakdown(fn, id_s, id_pred, an_s, anomaly_pred, weighting=weighting)
            out[f"{name}_class_weighted"] = b.weighted
        out["class_weighted_skipped_share"] = b.skipped_share
    return out
