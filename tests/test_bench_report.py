"""Benchmark results aggregation and the report, on hand-made result rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tripwire.bench import DEVIATIONS, get_suite, write_report
from tripwire.bench.report import load_paper
from tripwire.bench.results import aggregate
from tripwire.errors import TripwireError


def _row(seed: int, detector: str, anomaly_set: str, metric: str, value: float) -> dict:
    return {
        "suite": "mnist-lenet", "model": "lenet-mnist", "seed": seed, "fast": True,
        "n_id": 100, "versions": {"tripwire": "test"}, "detector": detector,
        "fitted_detector": detector, "params": {}, "anomaly_set": anomaly_set,
        "family": "ood", "n_anomaly": 50, "anomaly_info": {"n": 50}, "fit_seconds": 1.0,
        "id_scoring_images_per_second": 1000.0, "id_flagged": 0.05,
        "fitted_on_anomalies": None, "metric": metric, "value": value,
    }  # fmt: skip


def test_aggregate_mean_and_sample_std() -> None:
    rows = [_row(s, "uniform", "omniglot", "auroc", v) for s, v in enumerate([0.9, 1.0, 0.95])]
    agg = aggregate(rows)[("lenet-mnist", "uniform", "omniglot", "auroc")]
    assert agg.n == 3 and agg.mean == pytest.approx(0.95) and agg.std == pytest.approx(0.05)
    assert agg.percent() == "95.00 ± 5.00"
    single = aggregate(rows[:1])[("lenet-mnist", "uniform", "omniglot", "auroc")]
    assert single.std == 0.0 and single.percent() == "90.00"
    nan = aggregate([_row(0, "msp", "omniglot", "auroc", math.nan)])
    assert math.isnan(nan[("lenet-mnist", "msp", "omniglot", "auroc")].mean)


def test_report_sets_paper_numbers_beside_ours(tmp_path: Path) -> None:
    rows = []
    for seed, v in ((0, 0.998), (1, 0.996)):
        for det in ("uniform", "msp"):
            for metric in ("auroc", "auroc_class_weighted", "tnr_at_tpr95"):
                rows.append(_row(seed, det, "omniglot", metric, v if det == "uniform" else 0.9))
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    md = write_report(get_suite("mnist-lenet"), tmp_path, "tripwire bench --fast", DEVIATIONS)
    text = md.read_text()
    # paper's Table 2 uniform AUROC on Omniglot is 99.99; ours class-weighted mean 99.70
    assert "| omniglot / auroc | uniform | 99.99 | 99.70 ± 0.14 | -0.29 |" in text
    assert "| omniglot / auroc | msp | 98.82 | 90.00 ± 0.00 | -8.82 |" in text
    assert "not run" in text  # ODIN etc. absent from these rows
    assert "transductive" in text  # deviations are listed
    html = (tmp_path / "report.html").read_text()
    assert html.startswith("<!doctype html>") and "<table>" in html
    assert json.loads((tmp_path / "results.json").read_text()) == rows


def test_paper_numbers_are_bundled_and_unknown_suites_refused() -> None:
    paper = load_paper(get_suite("mnist-lenet"))
    assert paper is not None and paper["model"]["test_accuracy"] == 99.20
    with pytest.raises(TripwireError, match="mnist-lenet"):
        get_suite("imagenet")
