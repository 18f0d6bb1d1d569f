"""Class-weighted metrics of the uniform-framework paper (Zhao et al., §5): Σ_i γ_i · metric_i."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tripwire.errors import InvalidInputError
from tripwire.metrics._checks import _pair, _preds

Metric = Callable[[Any, Any], float]
Weighting = Literal["anomaly", "id", "pooled"]


@dataclass(frozen=True)
class ClassBreakdown:
    """Per-class values of a metric and the weights of the class-weighted average.

    Classes lacking ID or anomaly inputs have ``value = nan`` and ``weight = 0``; the other weights
    are renormalised to sum to 1. ``skipped_share`` is the raw weight those classes would have had.
    """

    classes: np.ndarray  #: class indices, ascending
    values: np.ndarray  #: metric per class (nan where skipped)
    weights: np.ndarray  #: renormalised γ_i (0 where skipped)
    n_id: np.ndarray  #: ID inputs predicted as each class
    n_anomaly: np.ndarray  #: anomalies predicted as each class
    skipped_share: float

    @property
    def weighted(self) -> float:
        """Σ_i γ_i · metric_i over the classes that have both ID inputs and anomalies."""
        ok = self.weights > 0
        return float(np.dot(self.weights[ok], self.values[ok]))


def class_breakdown(
    metric: Metric,
    id_scores: Any,
    id_pred: Any,
    anomaly_scores: Any,
    anomaly_pred: Any,
    num_classes: int | None = None,
    weighting: Weighting = "anomaly",
) -> ClassBreakdown:
    """Per-class ``metric`` (ID predicted as i vs anomalies predicted as i) and the weights γ_i.

    See ``class_weighted`` for the definition of γ_i and how empty classes are handled.
    """
    id_s, an_s = _pair(id_scores, anomaly_scores)
    id_p = _preds(id_pred, "id_pred", id_s.size, num_classes)
    an_p = _preds(anomaly_pred, "anomaly_pred", an_s.size, num_classes)
    if weighting not in ("anomaly", "id", "pooled"):
        raise InvalidInputError(
            f"weighting: expected 'anomaly', 'id' or 'pooled', got {weighting!r}"
        )
    hi = int(max(id_p.max(), an_p.max())) + 1
    n_cls = hi if num_classes is None else num_classes
    n_id = np.bincount(id_p, minlength=n_cls)
    n_an = np.bincount(an_p, minlength=n_cls)
    present = np.flatnonzero(n_id + n_an)
    n_id, n_an = n_id[present], n_an[present]
    raw = {"anomaly": n_an / an_s.size, "id": n_id / id_s.size}.get(
        weighting, (n_id + n_an) / (id_s.size + an_s.size)
    )
    ok = (n_id > 0) & (n_an > 0)
    if not ok.any():
        raise InvalidInputError(
            "class-weighted metric: no class is predicted for both ID inputs and anomalies"
        )
    values = np.full(present.size, np.nan)
    for j in np.flatnonzero(ok):
        c = present[j]
        values[j] = metric(id_s[id_p == c], an_s[an_p == c])
    weights = np.where(ok, raw, 0.0)
    total = weights.sum()
    if total <= 0:  # e.g. weighting="id" and every ID class lacks anomalies: cannot weight
        raise InvalidInputError(
            f"class-weighted metric: all '{weighting}' weight is on skipped classes"
        )
    return ClassBreakdown(
        classes=present,
        values=values,
        weights=weights / total,
        n_id=n_id,
        n_anomaly=n_an,
        skipped_share=float(raw[~ok].sum()),
    )


def class_weighted(
    metric: Metric,
    id_scores: Any,
    id_pred: Any,
    anomaly_scores: Any,
    anomaly_pred: Any,
    num_classes: int | None = None,
    weighting: Weighting = "anomaly",
) -> float:
    """Class-weighted metric of the uniform-framework paper (Zhao et al., §5): Σ_i γ_i · metric_i.

    metric_i is ``metric`` on the ID inputs the classifier predicts as class i vs the anomalies it
    predicts as i (the paper's detector has one model and one threshold per predicted class).

    The paper only says "γ_i is the percentage of sample cases being classified as i" and writes
    the formula for TPR; it does not say of which set. Choices here:

    * ``weighting="anomaly"`` (default): γ_i = share of the **anomaly set** predicted as i. With
      this weighting, class-weighted ``tnr_at_tpr95`` is exactly the fraction of all anomalies
      rejected by per-class thresholds that each accept 95 % of their class's ID inputs (the
      paper's detector, calibrated per class), so the number keeps a plain meaning. It also gives
      full weight to the classes that anomalies actually land in (adversarial targets, the
      fooling-image classes, the few classes an OOD set is mostly predicted as), which ID- or
      pooled-share weights would dilute.
    * ``"id"``: share of the ID set (the weights that make Σ γ_i·TPR_i the pooled TPR).
    * ``"pooled"``: share of ID and anomalies together.

    Classes predicted only for ID inputs or only for anomalies have no per-class metric: they are
    skipped and the remaining weights renormalised to sum to 1 (``class_breakdown(...)`` reports the
    skipped share). The paper does not say how it handled them. With one class this equals the
    pooled ``metric``.

    Examples:
        >>> from tripwire.metrics import auroc
        >>> class_weighted(auroc, [0.1, 0.5, 0.2], [0, 1, 1], [0.9, 0.4, 0.3], [0, 1, 1])
        0.6666666666666666
    """
    return class_breakdown(
        metric, id_scores, id_pred, anomaly_scores, anomaly_pred, num_classes, weighting
    ).weighted
