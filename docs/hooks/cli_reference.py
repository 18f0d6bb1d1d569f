"""mkdocs hook: the command-line reference page (``cli.md``), generated from the `tripwire` Typer
app at build time, so that it always says what `--help` says."""

from __future__ import annotations

from typing import Any

import click
from mkdocs.structure.files import File, Files
from typer.cli import get_docs_for_click
from typer.main import get_command


def on_files(files: Files, config: Any) -> Files:
    from tripwire.cli import app

    command = get_command(app)
    text = get_docs_for_click(
        obj=command, ctx=click.Context(command, info_name="tripwire"), name="tripwire", title=None
    )
    intro = (
        "# Command line\n\nGenerated from `tripwire --help` and each sub-command's `--help`.\n\n"
    )
    body = text.replace("# `tripwire`", "## `tripwire`", 1)
    files.append(File.generated(config, "cli.md", content=intro + body))
    return files
