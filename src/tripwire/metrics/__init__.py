"""Detection metrics as pure functions: ID-vs-anomaly scores in, one number out.

Conventions (methods.md §4, style.md):

* Scores are "higher = more anomalous". Every function takes ``id_scores`` (in-distribution
  inputs) and ``anomaly_scores`` as 1-D numpy arrays or torch tensors, finite and non-empty.
* Names say which class is positive. The uniform-framework paper (Zhao et al., §5) takes **ID as
  the positive class**: TPR = fraction of ID inputs accepted, TNR = fraction of anomalies
  rejected (``tnr_at_tpr95``). OpenOOD / pytorch-ood take **OOD as positive**
  (``fpr_at_tpr95_ood_positive``), a different operating point.
* Threshold rule used throughout: an input is *accepted* (called ID) iff ``score <= t`` and
  *flagged* (called anomalous) iff ``score > t``.

Examples:
    >>> import numpy as np
    >>> from tripwire import metrics
    >>> id_s, anom_s = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.35, 0.8, 0.9])
    >>> metrics.auroc(id_s, anom_s)
    0.9166666666666666
    >>> metrics.tnr_at_tpr(id_s, anom_s, tpr=0.75)
    1.0
"""

from tripwire.metrics.curves import aupr_in, aupr_out, auroc, roc_curve
from tripwire.metrics.per_class import ClassBreakdown, class_breakdown, class_weighted
from tripwire.metrics.summary import summarize
from tripwire.metrics.thresholds import (
    Rates,
    detection_accuracy,
    fpr_at_tpr95_ood_positive,
    fpr_at_tpr_ood_positive,
    rates_at_thresholds,
    tnr_at_tpr,
    tnr_at_tpr95,
)

__all__ = [
    "ClassBreakdown",
    "Rates",
    "aupr_in",
    "aupr_out",
    "auroc",
    "class_breakdown",
    "class_weighted",
    "detection_accuracy",
    "fpr_at_tpr95_ood_positive",
    "fpr_at_tpr_ood_positive",
    "rates_at_thresholds",
    "roc_curve",
    "summarize",
    "tnr_at_tpr",
    "tnr_at_tpr95",
]
