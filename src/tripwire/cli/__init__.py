"""The `tripwire` command line. Thin: parses options, calls the library, prints.

Each group of sub-commands lives in its own module and is added to `app` here.
"""

from __future__ import annotations

import logging

import typer

from tripwire.progress import set_progress

app = typer.Typer(
    name="tripwire",
    help="Detect out-of-distribution, adversarial and noise inputs to image classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs re-flow to the terminal's width
)


def _print_version(value: bool) -> None:
    if value:
        from tripwire import __version__

        typer.echo(f"tripwire {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars, warnings only."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """tripwire: tell when a classifier is fed something it should not trust."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if quiet:
        set_progress(False)


def main() -> None:
    """Console entry point; TripwireErrors become one clear line and exit code 2."""
    from rich.console import Console

    from tripwire.errors import TripwireError

    try:
        app()
    except TripwireError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False)
        raise SystemExit(2) from None


from tripwire.cli import anomalies as _anomalies  # noqa: E402, F401  (registers `tripwire anomalies`)
from tripwire.cli import bench as _bench  # noqa: E402, F401  (registers `tripwire bench`)
from tripwire.cli import data as _data  # noqa: E402, F401  (registers `tripwire data`)
from tripwire.cli import demo as _demo  # noqa: E402, F401  (registers `tripwire demo`)
from tripwire.cli import detect as _detect  # noqa: E402, F401  (registers `tripwire fit`, `tripwire score`)
from tripwire.cli import detectors as _detectors  # noqa: E402, F401  (`tripwire detectors`)
from tripwire.cli import explain as _explain  # noqa: E402, F401  (registers `tripwire explain`)
from tripwire.cli import export as _export  # noqa: E402, F401  (registers `tripwire export`)
from tripwire.cli import serve as _serve  # noqa: E402, F401  (registers `tripwire serve`)
from tripwire.cli import train as _train  # noqa: E402, F401  (registers `tripwire train`, `tripwire models`)
