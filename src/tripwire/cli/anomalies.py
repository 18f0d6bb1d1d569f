"""`tripwire anomalies make|list`: attacks, noise and fooling images from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from tripwire.anomalies import list_generators, make_anomalies
from tripwire.cli import app
from tripwire.cli.options import CACHE_DIR, DATA_DIR, PARAM, parse_params

anomalies_app = typer.Typer(help="Anomaly generators: attacks, noise and fooling images.")
app.add_typer(anomalies_app, name="anomalies")

_OUT = typer.Option(..., "--out", help="Output .npz file.")


@anomalies_app.command("make")
def make_command(
    model: str = typer.Option(..., "--model", help="Zoo model name, e.g. lenet-mnist."),
    kind: str = typer.Option(..., "--kind", help="Anomaly kind (see `tripwire anomalies list`)."),
    n: int = typer.Option(1000, "--n", min=1, help="Test images to attack / images to make."),
    out: Path = _OUT,
    seed: int = typer.Option(0, "--seed", help="Seed of the generator."),
    param: list[str] = PARAM,
    data_dir: Path | None = DATA_DIR,
    cache_dir: Path | None = CACHE_DIR,
    no_cache: bool = typer.Option(False, "--no-cache", help="Regenerate; do not use the cache."),
) -> None:
    """Make anomalies for a zoo model; attacks use the first N test images of its data set."""
    from tripwire.anomalies.registry import get_generator
    from tripwire.data import load_source
    from tripwire.models.zoo import get_recipe, load_model

    params = parse_params(param)
    gen = get_generator(kind, **params)  # fail fast on unknown kinds / parameters
    recipe = get_recipe(model)
    net = load_model(model, data_dir=data_dir, cache_dir=cache_dir)
    common: dict[str, Any] = {"seed": seed, "cache_dir": cache_dir, "use_cache": not no_cache}
    if gen.needs_inputs:
        test = load_source(recipe.source, "test", data_dir)
        sub = test.subset(slice(0, min(n, len(test))))
        result = make_anomalies(kind, net, sub.as_float(), sub.require_labels(), **common, **params)
    else:
        params.setdefault("n", n)
        params.setdefault("shape", list(recipe.input_shape))
        result = make_anomalies(kind, net, **common, **params)
    result.save(out)
    s = result.summary()
    console = Console()
    console.print(
        f"[bold]{kind}[/] on {model}: {s['n']} images, success {s['n_success']}/{s['n']} "
        f"([bold]{s['success_rate']:.1%}[/]), mean confidence {s['mean_confidence']:.4f}"
    )
    norms = ", ".join(f"{k[5:]} {v:.4g}" for k, v in s.items() if k.startswith("mean_l"))
    if norms:
        console.print(f"mean perturbation norms (successes): {norms}")
    console.print(f"saved to {out}")


@anomalies_app.command("list")
def list_command() -> None:
    """Show every anomaly kind with its description and default settings."""
    table = Table("kind", "description", "defaults")
    for cls in list_generators():
        defaults = ", ".join(f"{k}={v}" for k, v in cls.defaults.items() if v is not None)
        table.add_row(cls.name, cls.description, defaults)
    Console().print(table)
