"""Benchmark runner parts that need no model: merging the summaries of a set made in parts, one
run per output folder."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from tripwire.bench.runner import merge_summaries, run_suite
from tripwire.bench.suites import get_suite
from tripwire.errors import InvalidInputError
from tripwire.locking import exclusive_lock


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


def test_a_second_run_into_the_same_folder_stops_at_once(tmp_path: Path) -> None:
    with exclusive_lock(tmp_path / ".lock", wait=False) as held:  # what a running bench holds
        assert held
        with pytest.raises(InvalidInputError, match="another tripwire bench is writing"):
            run_suite(get_suite("mnist-lenet"), tmp_path, seeds=(0,), detectors=["msp"])
        # another process sees the lock too (flock locks belong to the open file)
        probe = (
            "import sys; from tripwire.locking import exclusive_lock\n"
            f"with exclusive_lock({str(tmp_path / '.lock')!r}, wait=False) as held:\n"
            "    sys.exit(0 if held else 3)"
        )
        assert subprocess.run([sys.executable, "-c", probe]).returncode == 3
    assert not (tmp_path / "results.jsonl").exists()
    with exclusive_lock(tmp_path / ".lock", wait=False) as held:  # released on exit
        assert held


def test_bench_help_names_every_suite() -> None:
    from typer.testing import CliRunner

    from tripwire.bench.suites import SUITES
    from tripwire.cli import app

    result = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in SUITES)


def test_seeds_are_comma_separated_or_repeated_and_checked() -> None:
    import typer

    from tripwire.cli.bench import parse_seeds

    assert parse_seeds(["0,1,2"]) == [0, 1, 2]
    assert parse_seeds(["0", "1", " 2 "]) == [0, 1, 2]  # --seeds 0 --seeds 1 --seeds 2
    for bad in (["0,x"], ["1", "1"], [","]):
        with pytest.raises(typer.BadParameter):
            parse_seeds(bad)
