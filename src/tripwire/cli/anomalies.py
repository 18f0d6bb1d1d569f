"""`tripwire anomalies make|list`: attacks, noise and fooling images from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from tripwire.anomalies import list_generators, make_anomalies
from tripwire.cli import app
from tripwire.cli.options import (
    CACHE_DIR,
    DATA_DIR,
    DEVICE,
    MODEL_HELP,
    OUTPUT,
    PARAM,
    WEIGHTS,
    output_choice,
    parse_params,
    to_device,
)
from tripwire.errors import InvalidInputError

anomalies_app = typer.Typer(help="Anomaly generators: attacks, noise and fooling images.")
app.add_typer(anomalies_app, name="anomalies")

_OUT = typer.Option(..., "--out", help="Output .npz file.")


@anomalies_app.command("make")
def make_command(
    model: str = typer.Option(..., "--model", help=MODEL_HELP),
    kind: str = typer.Option(..., "--kind", help="Anomaly kind (see `tripwire anomalies list`)."),
    n: int = typer.Option(1000, "--n", min=1, help="Test images to attack / images to make."),
    out: Path = _OUT,
    weights: Path | None = WEIGHTS,
    output: str = OUTPUT,
    data: str | None = typer.Option(
        None,
        "--data",
        help="Images to attack (and, for noise, their shape): a source name (its test split) or "
        "an .npz / image folder with labels. Default: a zoo model's test set; required for "
        "your own model.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the generator."),
    param: list[str] = PARAM,
    data_dir: Path | None = DATA_DIR,
    cache_dir: Path | None = CACHE_DIR,
    no_cache: bool = typer.Option(False, "--no-cache", help="Regenerate; do not use the cache."),
    device: str | None = DEVICE,
) -> None:
    """Make anomalies for a model; attacks use the first N images of --data (a zoo model's test
    set by default). The .npz written is input to `tripwire score` and `tripwire data preview`."""
    from tripwire.anomalies.registry import get_generator
    from tripwire.data import ImageSet, load_source, load_user_data
    from tripwire.models.reference import ModelReference
    from tripwire.models.zoo import get_recipe

    params = parse_params(param)
    gen = get_generator(kind, **params)  # fail fast on unknown kinds / parameters
    ref = ModelReference(
        model, None if weights is None else str(weights), output=output_choice(output)
    )
    if data is None and not ref.is_zoo:
        raise InvalidInputError("--data is required for a model that is not in the zoo")
    net = to_device(ref.load(data_dir, cache_dir), device)

    def images() -> ImageSet:
        source = get_recipe(ref.name).source if data is None else data
        if Path(source).exists():
            return load_user_data(source)
        return load_source(source, "test", data_dir)

    common: dict[str, Any] = {"seed": seed, "cache_dir": cache_dir, "use_cache": not no_cache}
    if gen.needs_inputs:
        sub = images().subset(slice(0, n))
        result = make_anomalies(kind, net, sub.as_float(), sub.require_labels(), **common, **params)
    else:
        params.setdefault("n", n)
        shape = get_recipe(ref.name).input_shape if data is None else images().image_shape
        params.setdefault("shape", list(shape))
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
