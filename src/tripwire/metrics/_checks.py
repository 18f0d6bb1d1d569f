"""Input validation shared by the metric functions (clear InvalidInputError, never numpy traces)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tripwire.errors import InvalidInputError


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if x.is_floating_point():  # float16/bfloat16 have no (or a lossy) numpy twin
            x = x.double()
        x = x.numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name}: cannot be read as an array ({exc})") from None


def _scores(x: Any, name: str) -> np.ndarray:
    """Validate one score vector: 1-D, real numbers, finite, non-empty; return float64."""
    a = _to_numpy(x, name)
    if a.dtype == bool or not (
        np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)
    ):
        raise InvalidInputError(f"{name}: expected real-valued scores, got dtype {a.dtype}")
    if a.ndim != 1:
        raise InvalidInputError(f"{name}: expected a 1-D array of scores, got shape {a.shape}")
    if a.size == 0:
        raise InvalidInputError(f"{name}: is empty")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise InvalidInputError(f"{name}: {bad} of {a.size} scores are NaN or infinite")
    return a


def _pair(id_scores: Any, anomaly_scores: Any) -> tuple[np.ndarray, np.ndarray]:
    return _scores(id_scores, "id_scores"), _scores(anomaly_scores, "anomaly_scores")


def _check_level(tpr: float) -> float:
    if not (isinstance(tpr, (int, float)) and 0.0 < float(tpr) <= 1.0):
        raise InvalidInputError(f"tpr: expected a number in (0, 1], got {tpr!r}")
    return float(tpr)


def _flags(x: Any, name: str) -> np.ndarray:
    a = _to_numpy(x, name)
    if a.ndim != 1 or a.size == 0:
        raise InvalidInputError(f"{name}: expected a non-empty 1-D array, got shape {a.shape}")
    if a.dtype != bool:
        if not np.issubdtype(a.dtype, np.integer) or not np.isin(a, (0, 1)).all():
            raise InvalidInputError(f"{name}: expected booleans (is_anomaly), got dtype {a.dtype}")
        a = a.astype(bool)
    return a


def _preds(x: Any, name: str, n: int, num_classes: int | None) -> np.ndarray:
    a = _to_numpy(x, name)
    if a.shape != (n,):
        raise InvalidInputError(f"{name}: expected shape ({n},) to match the scores, got {a.shape}")
    if not np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        raise InvalidInputError(f"{name}: expected integer class predictions, got dtype {a.dtype}")
    if a.min() < 0 or (num_classes is not None and a.max() >= num_classes):
        hi = "" if num_classes is None else f" and < num_classes={num_classes}"
        raise InvalidInputError(f"{name}: class predictions must be >= 0{hi}")
    return a.astype(np.int64)
