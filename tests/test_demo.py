"""`tripwire demo`: runs end to end with no data files and writes its report."""

from __future__ import annotations

from pathlib import Path

import pytest

from tripwire.demo import PAPER, REFERENCE, run_demo
from tripwire.detectors import DEFAULT_DETECTOR


@pytest.mark.slow
def test_demo_runs_and_reports(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo")
    assert result.model_accuracy > 0.95
    detectors = {r.detector for r in result.rows}
    assert detectors == {DEFAULT_DETECTOR, PAPER, REFERENCE}
    assert {r.anomaly_set for r in result.rows} >= {"uniform noise", "FGSM", "photo crops"}
    by = {(r.detector, r.anomaly_set): r for r in result.rows}
    assert by[(DEFAULT_DETECTOR, "uniform noise")].auroc > 0.95
    assert by[(DEFAULT_DETECTOR, "FGSM")].auroc > by[(REFERENCE, "FGSM")].auroc
    for name, share in result.id_flagged.items():
        assert share < 0.2, name  # thresholds from held-out training digits
    text = result.report.read_text()
    assert "| detector | anomaly set |" in text and "tripwire demo --seed 0" in text
    assert (tmp_path / "demo" / "roc.png").stat().st_size > 1000
    assert (tmp_path / "demo" / "histograms.png").stat().st_size > 1000
