"""Benchmark results: tidy rows in, mean ± std over seeds out."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Aggregate:
    """A metric over seeds."""

    mean: float
    std: float
    n: int

    def percent(self) -> str:
        """``"99.12 ± 0.08"`` (in percent; no ± with one seed)."""
        if self.n == 1:
            return f"{100 * self.mean:.2f}"
        return f"{100 * self.mean:.2f} ± {100 * self.std:.2f}"


Key = tuple[str, str, str, str]  # model, detector, anomaly set, metric


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``results.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def aggregate(rows: list[dict[str, Any]]) -> dict[Key, Aggregate]:
    """Mean and (sample) standard deviation over seeds of every (model, detector, set, metric)."""
    groups: dict[Key, list[float]] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["detector"], r["anomaly_set"], r["metric"])].append(r["value"])
    return {key: _aggregate(values) for key, values in groups.items()}


def _aggregate(values: list[float]) -> Aggregate:
    """Mean and sample standard deviation of the finite `values`."""
    finite = [v for v in values if math.isfinite(v)]
    n = len(finite)
    mean = sum(finite) / n if n else math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else 0.0
    return Aggregate(mean, std, n)


def id_flagged(rows: list[dict[str, Any]]) -> dict[tuple[str, str], Aggregate]:
    """Per (model, detector): the share of clean ID test images its thresholds flag (the run's
    ``id_flagged``, one value per seed), mean and sample standard deviation over seeds."""
    per_seed: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for r in rows:
        if "id_flagged" in r:
            per_seed[(r["model"], r["detector"])][r["seed"]] = r["id_flagged"]
    return {key: _aggregate(list(values.values())) for key, values in per_seed.items()}


def suite_summary(rows: list[dict[str, Any]], target_flagged: float = 0.05) -> dict[str, Any]:
    """The machine-readable summary of a run, committed beside its report: per model × detector
    × anomaly set × metric the mean and standard deviation over seeds, and per model × detector
    the share of clean ID test images flagged against `target_flagged` (1 − calibration TPR)."""
    first = rows[0]
    return {
        "suite": first["suite"],
        "fast": first["fast"],
        "seeds": sorted({r["seed"] for r in rows}),
        "versions": first["versions"],
        "metrics": [
            {"model": m, "detector": d, "set": s, "metric": k, **_fields(a)}
            for (m, d, s, k), a in sorted(aggregate(rows).items())
        ],
        "id_flagged": [
            {"model": m, "detector": d, "target": target_flagged, **_fields(a)}
            for (m, d), a in sorted(id_flagged(rows).items())
        ],
    }


def _fields(a: Aggregate) -> dict[str, float | int | None]:
    """JSON fields of an aggregate (NaN, as in a set no input of which was scored, as null)."""
    return {
        "mean": a.mean if math.isfinite(a.mean) else None,
        "sd": a.std if math.isfinite(a.std) else None,
        "n_seeds": a.n,
    }
