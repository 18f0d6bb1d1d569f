"""`tripwire demo`: the main job on the embedded default (scikit-learn's 8×8 digits)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tripwire.cli import app
from tripwire.cli.options import CACHE_DIR

_OUT = typer.Option(Path("tripwire-demo"), "--out", help="Folder for the report and figures.")


@app.command("demo")
def demo_command(
    out: Path = _OUT,
    seed: int = typer.Option(0, help="Seed of the model, splits, detectors and anomalies."),
    cache_dir: Path | None = CACHE_DIR,
) -> None:
    """Train a small CNN on 8×8 digits and test detectors on it (needs no data files).

    Fits the default detector, the paper's and the max-softmax baseline, tests them against
    noise, FGSM, font letters and photo crops, prints the table and writes a report with ROC
    curves and score histograms.
    """
    from tripwire.demo import run_demo

    result = run_demo(out, seed=seed, cache_dir=cache_dir)
    table = Table(title=f"tripwire demo — cnn-digits8 ({100 * result.model_accuracy:.1f} % acc.)")
    for col in ("detector", "anomaly set", "n", "AUROC %", "TNR@95%TPR %", "flagged %"):
        table.add_column(col, justify="left" if col in ("detector", "anomaly set") else "right")
    for r in result.rows:
        table.add_row(
            r.detector,
            r.anomaly_set,
            str(r.n),
            f"{100 * r.auroc:.2f}",
            f"{100 * r.tnr_at_tpr95:.2f}",
            f"{100 * r.flagged:.1f}",
        )
    console = Console()
    console.print(table)
    for name, share in result.id_flagged.items():
        console.print(f"{name}: {100 * share:.1f} % of clean test digits flagged (target 5 %)")
    for note in result.notes:
        console.print(note)
    console.print(f"report: {result.report} ({result.seconds:.0f} s)")
