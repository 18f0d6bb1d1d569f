"""`tripwire detectors list`: every registered detector, what it is, its parameters and defaults."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from tripwire.cli import app
from tripwire.detectors import DEFAULT_DETECTOR, get_detector_class, list_detectors
from tripwire.detectors.registry import detector_parameters

detectors_app = typer.Typer(help="The registered detectors.")
app.add_typer(detectors_app, name="detectors")


@detectors_app.command("list")
def list_command() -> None:
    """Show every detector: its summary and its parameters with their defaults (set one with
    `tripwire fit --detector NAME --param key=value`)."""
    table = Table(title=f"tripwire detectors (default: {DEFAULT_DETECTOR})")
    table.add_column("name", no_wrap=True)
    table.add_column("summary")
    table.add_column("parameters (defaults)")
    for name in list_detectors():
        klass = get_detector_class(name)
        summary = (klass.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        params = ", ".join(f"{k}={p.default!r}" for k, p in detector_parameters(klass).items())
        table.add_row(name + (" (default)" if name == DEFAULT_DETECTOR else ""), summary, params)
    Console().print(table)
