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
    out = {}
    for key, values in groups.items():
        finite = [v for v in values if math.isfinite(v)]
        n = len(finite)
        mean = sum(finite) / n if n else math.nan
        std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else 0.0
        out[key] = Aggregate(mean, std, n)
    return out
