"""Benchmarks: suites (what runs), the runner, results aggregation and the report."""

from tripwire.bench.report import write_report
from tripwire.bench.runner import run_suite
from tripwire.bench.suites import SUITES, Suite, get_suite

__all__ = ["SUITES", "Suite", "get_suite", "run_suite", "write_report"]
