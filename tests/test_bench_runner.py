"""Benchmark runner helpers that need no model: merging the summaries of a set made in parts."""

from __future__ import annotations

import math

import pytest

from tripwire.bench.runner import merge_summaries
from tripwire.bench.suites import get_suite


def test_merge_summaries_weights_means_by_successes() -> None:
    parts = [
        {"kind": "fooling", "n": 10, "n_success": ok, "success_rate": ok / 10, "mean_confidence": c}
        for ok, c in ((10, 0.9), (5, 0.6), (0, math.nan))
    ]
    merged = merge_summaries(parts)
    assert merged["n"] == 30 and merged["n_success"] == 15
    assert merged["success_rate"] == pytest.approx(0.5)
    assert merged["mean_confidence"] == pytest.approx((10 * 0.9 + 5 * 0.6) / 15)
    none = merge_summaries([parts[2]])
    assert none["success_rate"] == 0.0 and math.isnan(none["mean_confidence"])


def test_only_fooling_is_made_per_target_in_the_lenet_suite() -> None:
    suite = get_suite("mnist-lenet")
    assert [a.name for a in suite.anomalies if a.per_target] == ["fooling"]
    assert suite.full.per_set >= 1_000 and suite.full.id_test >= 1_000
