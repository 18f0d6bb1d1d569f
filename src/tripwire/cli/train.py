"""`tripwire train NAME` and `tripwire models list`: the model zoo from the command line."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tripwire.cli import app
from tripwire.cli.options import CACHE_DIR, DATA_DIR, THREADS, set_threads
from tripwire.errors import FormatError
from tripwire.models.checkpoint import checkpoint_progress
from tripwire.models.stored import read_stored_card
from tripwire.models.zoo import (
    CHECKPOINT_DIR,
    get_recipe,
    list_models,
    model_dir,
    outlier_exposure_name,
    read_card,
    recipe_matches,
    store_model,
    train_model,
    training_in_progress,
)
from tripwire.paths import cache_dir as resolve_cache_dir
from tripwire.progress import progress_enabled

models_app = typer.Typer(help="The model zoo: reference classifiers and their training.")
app.add_typer(models_app, name="models")


@app.command("train")
def train_command(
    name: str = typer.Argument(..., help="Zoo model to train (see `tripwire models list`)."),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="Override the recipe's epochs."
    ),
    seed: int = typer.Option(0, "--seed", help="Training seed (also names the stored copy)."),
    data_dir: Path | None = DATA_DIR,
    cache_dir: Path | None = CACHE_DIR,
    force: bool = typer.Option(
        False, "--force", help="Retrain from scratch even if the cache holds the model."
    ),
    outlier_exposure: str | None = typer.Option(
        None,
        "--outlier-exposure",
        metavar="SET",
        help="Fine-tune the trained model (same seed) with Outlier Exposure on SET (a data "
        "source name or an .npz path) and store it as the zoo's OE twin, e.g. lenet-mnist-oe.",
    ),
    threads: int | None = THREADS,
) -> None:
    """Train a zoo model with its fixed recipe and seed; store weights (safetensors) + card.

    Training resumes from the last epoch's checkpoint after an interruption.
    """
    set_threads(threads)
    console = Console()
    if outlier_exposure is not None:
        name = outlier_exposure_name(name)
    recipe = get_recipe(name)
    folder = model_dir(name, seed, cache_dir)
    card = None if force else read_card(name, seed, cache_dir)
    if card is not None and outlier_exposure is not None:
        stored_set = card.get("outlier_exposure", {}).get("outlier_set")
        card = card if stored_set == outlier_exposure else None  # another set: train anew
    if card is not None:
        console.print(
            f"{name} (seed {seed}) is already trained: test accuracy "
            f"[bold]{card['test_accuracy']:.2%}[/] — in {folder} (use --force to retrain)"
        )
        return
    if outlier_exposure is not None:
        console.print(
            f"fine-tuning [bold]{recipe.base}[/] (seed {seed}) with Outlier Exposure on "
            f"{outlier_exposure} (λ = {recipe.outlier_weight}), {epochs or recipe.epochs} epochs "
            f"→ {name}"
        )
    else:
        console.print(
            f"training [bold]{name}[/] ({recipe.description}) on {recipe.source}, seed {seed}, "
            f"{epochs or recipe.epochs} epochs"
        )
    if not force and (folder / CHECKPOINT_DIR / "state.json").is_file():
        console.print(f"resuming the interrupted run from {folder / CHECKPOINT_DIR}")
    _, card = train_model(
        name,
        seed=seed,
        epochs=epochs,
        data_dir=data_dir,
        cache_dir=cache_dir,
        progress=progress_enabled(),
        resume=not force,
        outlier_set=outlier_exposure,
    )
    for row in card["history"]:
        outliers = f", outlier max-softmax {row['outlier_msp']:.3f}" if "outlier_msp" in row else ""
        console.print(
            f"  epoch {int(row['epoch']):>3}: train loss {row['train_loss']:.4f}, "
            f"test accuracy {row['test_accuracy']:.2%}{outliers}  ({row['seconds']:.0f} s)"
        )
    if "base_model" in card:
        console.print(
            f"{recipe.base} (plain): test accuracy {card['base_model']['test_accuracy']:.2%}"
        )
    console.print(
        f"{name}: test accuracy [bold]{card['test_accuracy']:.2%}[/] "
        f"({card['test_data']['n']:,} test images) in {card['training_seconds']:.0f} s"
    )
    console.print(f"weights: {folder / 'weights.safetensors'}")
    console.print(f"card:    {folder / 'card.json'}")


@models_app.command("list")
def list_command(
    cache_dir: Path | None = CACHE_DIR,
    seed: int = typer.Option(0, "--seed", help="Which trained copy to look for."),
) -> None:
    """Show every zoo model, whether it is trained in the cache and its recorded accuracy."""
    table = Table(title=f"tripwire model zoo (cache: {resolve_cache_dir(cache_dir)}, seed {seed})")
    table.add_column("name", no_wrap=True)
    for col in ("data", "trained", "accuracy", "paper", "model"):
        table.add_column(col)  # wrapped at word breaks in a narrow terminal
    for name in list_models():
        recipe = get_recipe(name)
        trained, accuracy = _status(name, seed, cache_dir)
        paper = "" if recipe.paper_accuracy is None else f"{recipe.paper_accuracy:.2%}"
        data = f"{recipe.source} {'×'.join(str(d) for d in recipe.input_shape)}"
        table.add_row(name, data, trained, accuracy, paper, recipe.description)
    Console().print(table)


_STORED_DIR = typer.Option(
    None,
    "--stored-dir",
    help="Where to store (default: $TRIPWIRE_STORED_MODELS, else the package's "
    "tripwire/models/stored/).",
)


def _status(name: str, seed: int, cache_dir: Path | None) -> tuple[str, str]:
    """("stored"/"yes"/"no"/"training: epoch e/E"/"interrupted …"/"corrupt …", accuracy) of a zoo
    model: the package's stored weights first, as `load_model` uses them; an unfinished run by its
    last checkpoint (training if a process holds its run lock, else interrupted)."""
    try:
        card = read_stored_card(name, seed)
        where = "stored"
        if card is None:
            card, where = read_card(name, seed, cache_dir), "yes"
    except FormatError:
        return "[red]corrupt card or stored files[/]", ""
    if card is None:
        progress = checkpoint_progress(model_dir(name, seed, cache_dir) / CHECKPOINT_DIR)
        if progress is None or not progress.history:
            return "[yellow]no[/]", ""
        epochs = progress.config.get("epochs", "?")
        accuracy = f"{progress.history[-1]['test_accuracy']:.2%} so far"
        if training_in_progress(name, seed, cache_dir):
            return f"[yellow]training: epoch {progress.epoch}/{epochs}[/]", accuracy
        return f"[yellow]interrupted after epoch {progress.epoch}/{epochs}[/] (resumes)", accuracy
    stale = "" if recipe_matches(card) else " (older recipe)"
    return f"[green]{where}[/]{stale}", f"{card['test_accuracy']:.2%}"


@models_app.command("store")
def store_command(
    name: str = typer.Argument(..., help="Zoo model trained in the cache."),
    seed: int = typer.Option(0, "--seed", help="Which trained copy."),
    cache_dir: Path | None = CACHE_DIR,
    stored_dir: Path | None = _STORED_DIR,
) -> None:
    """Maintainers: copy a trained cache model into the package's stored weights (float16 where
    the recipe says so), so that `load_model` and the benchmarks use it without training."""
    weights, card_path = store_model(name, seed=seed, cache_dir=cache_dir, stored_dir=stored_dir)
    card = read_stored_card(name, seed, weights.parent)
    assert card is not None
    Console().print(
        f"stored {name} (seed {seed}, test accuracy {card['test_accuracy']:.2%}, "
        f"{weights.stat().st_size / 2**20:.1f} MiB)\nweights: {weights}\ncard:    {card_path}"
    )
