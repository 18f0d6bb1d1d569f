"""`tripwire detectors list` / `show`: every registered detector, what it is, its parameters,
their defaults and what each accepts."""

from __future__ import annotations

import inspect
import re
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from tripwire.cli import app
from tripwire.detectors import DEFAULT_DETECTOR, get_detector_class, list_detectors
from tripwire.detectors.fileformat import params_schema
from tripwire.detectors.registry import detector_parameters

detectors_app = typer.Typer(help="The registered detectors.")
app.add_typer(detectors_app, name="detectors")


@detectors_app.command("list")
def list_command() -> None:
    """Show every detector: its summary and its parameters with their defaults (set one with
    `tripwire fit --detector NAME --param key=value`; `tripwire detectors show NAME` says what
    each accepts)."""
    table = Table(title=f"tripwire detectors (default: {DEFAULT_DETECTOR})")
    table.add_column("name", no_wrap=True)
    table.add_column("summary")
    table.add_column("parameters (defaults)")
    for name in list_detectors():
        klass = get_detector_class(name)
        params = ", ".join(f"{k}={p.default!r}" for k, p in detector_parameters(klass).items())
        table.add_row(
            name + (" (default)" if name == DEFAULT_DETECTOR else ""), _summary(klass), params
        )
    Console().print(table)


@detectors_app.command("show")
def show_command(
    name: str = typer.Argument(..., help="A registered detector (see `tripwire detectors list`)."),
) -> None:
    """Show one detector: what it does, and each parameter with its default, what it accepts
    and what it means."""
    klass = get_detector_class(name)
    meanings: dict[str, str] = {}
    for base in reversed(klass.__mro__):  # a subclass's own words win
        meanings |= _documented_args(base.__doc__ or "")
    accepts = params_schema(klass).model_json_schema().get("properties", {})
    console = Console()
    console.print(f"[bold]{name}[/bold] — {_summary(klass)}")
    table = Table()
    for column in ("parameter", "default", "accepts", "meaning"):
        table.add_column(column, no_wrap=column == "parameter")
    for key, p in detector_parameters(klass).items():
        table.add_row(key, repr(p.default), describe(accepts.get(key, {})), meanings.get(key, ""))
    console.print(table)


def _summary(klass: type) -> str:
    return " ".join(inspect.cleandoc(klass.__doc__ or "").split("\n\n")[0].split())


def _documented_args(doc: str) -> dict[str, str]:
    """The ``Args:`` entries of a Google-style docstring, each joined onto one line."""
    text = inspect.cleandoc(doc)
    if "Args:" not in text:
        return {}
    out: dict[str, str] = {}
    current = None
    for line in text.split("Args:", 1)[1].splitlines():
        entry = re.match(r"^    (\w+): (.*)$", line)
        if entry:
            current = entry.group(1)
            out[current] = entry.group(2).strip()
        elif line.startswith("        ") and current:
            out[current] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break
    return out


def describe(schema: dict[str, Any]) -> str:
    """What a parameter's JSON schema accepts, in words (e.g. ``number in (0, 1]``)."""
    if "anyOf" in schema:
        return " or ".join(describe(s) for s in schema["anyOf"])
    if "const" in schema:
        return repr(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        what = f"list of {describe(schema.get('items', {}))}"
        sizes = (schema.get("minItems"), schema.get("maxItems"))
        if sizes[0] is not None and sizes[0] == sizes[1]:
            return f"{what} ({sizes[0]} of them)"
        return what + (f" (≥ {sizes[0]})" if sizes[0] else "")
    if kind in ("number", "integer"):
        return ("integer" if kind == "integer" else "number") + _range(schema)
    return {"null": "None", "string": "text", "boolean": "true or false"}.get(str(kind), "any")


def _range(schema: dict[str, Any]) -> str:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if low is not None and high is not None:
        left = "[" if "minimum" in schema else "("
        right = "]" if "maximum" in schema else ")"
        return f" in {left}{low:g}, {high:g}{right}"
    if low is not None:
        return f" {'≥' if 'minimum' in schema else '>'} {low:g}"
    if high is not None:
        return f" {'≤' if 'maximum' in schema else '<'} {high:g}"
    return ""
