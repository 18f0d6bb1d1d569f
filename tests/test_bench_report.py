"""Benchmark results aggregation and the report, on hand-made result rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tripwire.bench import get_suite, write_report
from tripwire.bench.report import load_paper
from tripwire.bench.results import aggregate
from tripwire.detectors import DEFAULT_DETECTOR
from tripwire.errors import InvalidInputError, TripwireError
from tripwire.report.plots import per_class_histogram_figure


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
    md = write_report(get_suite("mnist-lenet"), tmp_path, "tripwire bench --fast")
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


def _scores_npz(path: Path, seed: int) -> None:
    """Scores + predicted classes as the runner stores them: ID near 0, anomalies higher."""
    rng = np.random.default_rng(seed)
    np.savez_compressed(
        path,
        id=rng.normal(0, 1, 400),
        id_pred=rng.integers(0, 10, 400),
        omniglot=rng.normal(4, 1, 120),
        omniglot_pred=rng.integers(0, 10, 120),
        fgsm=rng.normal(3, 1, 80),
        fgsm_pred=np.full(80, 8),  # every adversarial example lands in class 8
    )


@pytest.mark.slow  # matplotlib figures: ~5–30 s on a busy 2-core machine
def test_report_draws_per_class_histograms_and_inlines_them(tmp_path: Path) -> None:
    rows = [
        _row(0, det, s, "auroc", 0.9)
        for det in (DEFAULT_DETECTOR, "mahalanobis")
        for s in ("omniglot", "fgsm")
    ]
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "scores").mkdir()
    for det in (DEFAULT_DETECTOR, "mahalanobis"):
        _scores_npz(tmp_path / "scores" / f"lenet-mnist-seed0-{det}.npz", 0)
    md = write_report(get_suite("mnist-lenet"), tmp_path, "tripwire bench")
    text = md.read_text()
    assert "## Score histograms per predicted class" in text
    for det in (DEFAULT_DETECTOR, "mahalanobis"):
        png = f"per-class-lenet-mnist-{det}.png"
        assert f"]({png})" in text and (tmp_path / png).stat().st_size > 10_000
    html = (tmp_path / "report.html").read_text()
    assert 'src="per-class' not in html  # self-contained: every figure inlined
    assert html.count('src="data:image/png;base64,') >= 4  # roc, histograms, 2 per-class


@pytest.mark.slow  # matplotlib figures: ~5–30 s on a busy 2-core machine
def test_per_class_histograms_one_panel_per_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    s, p = rng.normal(size=300), rng.integers(0, 10, 300)
    groups = {"ood": (rng.normal(5, 1, 50), rng.integers(0, 10, 50))}
    ten = per_class_histogram_figure(s, p, groups, tmp_path / "ten.png", "t")
    three = per_class_histogram_figure(s, p, groups, tmp_path / "three.png", "t", classes=[0, 1, 2])
    with Image.open(ten) as a, Image.open(three) as b:
        assert a.size[1] > 1.5 * b.size[1]  # 10 classes: two rows of five; 3 classes: one row
        assert a.size[0] > b.size[0]
    with pytest.raises(InvalidInputError, match="predicted classes"):
        per_class_histogram_figure(s, p[:-1], groups, tmp_path / "bad.png", "t")
    with pytest.raises(InvalidInputError, match="empty"):
        per_class_histogram_figure(s[:0], p[:0], {}, tmp_path / "none.png", "t")


def test_report_lists_wall_time_per_step(tmp_path: Path) -> None:
    rows = []
    for seed in (0, 1):
        for s, made in (("omniglot", 0.5), ("fooling", 90.0)):
            r = _row(seed, "msp", s, "auroc", 0.9)
            r["step_seconds"] = {"load_model_and_data": 2.0, "anomaly_sets": 90.5}
            r["anomaly_info"] = {"n": 50, "seconds": made}
            r["scoring_seconds"] = 0.25
            rows.append(r)
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    text = write_report(get_suite("mnist-lenet"), tmp_path, "tripwire bench").read_text()
    assert "| make fooling | 90.0 |" in text
    # msp: fit 1 s + 100 ID images at 1000/s + 2 sets × 0.25 s
    assert "| detector msp (fit + scoring) | 1.6 |" in text
    assert "| anomaly_sets | 90.5 |" in text


def test_cost_table_shows_what_each_seeds_fit_chose(tmp_path: Path) -> None:
    rows = []
    for seed, layer in ((0, "relu1"), (1, "pool1")):
        for det in ("uniform", "msp"):
            row = _row(seed, det, "omniglot", "auroc", 0.9)
            if det == "uniform":
                row["fit_summary"] = {"layer": layer}
            rows.append(row)
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    text = write_report(get_suite("mnist-lenet"), tmp_path, "tripwire bench").read_text()
    assert "chosen by fit (per seed)" in text
    uniform = next(line for line in text.splitlines() if line.startswith("| uniform | 1.0 |"))
    msp = next(line for line in text.splitlines() if line.startswith("| msp | 1.0 |"))
    assert uniform.endswith("| layer relu1 / pool1 |") and msp.endswith("| — |")


def test_summary_json_and_the_flagged_table_recheck_every_number(tmp_path: Path) -> None:
    rows = []
    for seed, (auroc, flagged) in enumerate(((0.90, 0.04), (0.94, 0.10))):
        for metric, value in (("auroc", auroc), ("tnr_at_tpr95", math.nan)):
            row = _row(seed, "uniform", "omniglot", metric, value)
            rows.append({**row, "id_flagged": flagged})
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    text = write_report(get_suite("mnist-lenet"), tmp_path, "tripwire bench").read_text()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["suite"] == "mnist-lenet" and summary["seeds"] == [0, 1]
    (auroc,) = [m for m in summary["metrics"] if m["metric"] == "auroc"]
    assert auroc["model"] == "lenet-mnist" and auroc["detector"] == "uniform"
    assert auroc["set"] == "omniglot" and auroc["n_seeds"] == 2
    assert auroc["mean"] == pytest.approx(0.92) and auroc["sd"] == pytest.approx(0.02 * 2**0.5)
    (tnr,) = [m for m in summary["metrics"] if m["metric"] == "tnr_at_tpr95"]
    assert tnr["mean"] is None and tnr["n_seeds"] == 0  # NaN is null, not an invalid token
    (flag,) = summary["id_flagged"]
    assert flag["mean"] == pytest.approx(0.07) and flag["target"] == 0.05
    # the report shows the same share per detector and marks it outside 5 ± 1 %
    assert "| uniform | 7.00 ± 4.24 (outside 4–6) |" in text
