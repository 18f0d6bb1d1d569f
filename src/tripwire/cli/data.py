"""`tripwire data …`: list the data sources and preview their images."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tripwire.cli import app
from tripwire.cli.options import DATA_DIR
from tripwire.data import ImageSet, get_source, list_sources, load_user_data
from tripwire.paths import data_dir as resolve_data_dir

data_app = typer.Typer(
    help="The data sources: real sets in the data directory, generated sets, your own files.",
    no_args_is_help=True,
)


def _status(present: bool | None) -> str:
    return {True: "[green]present[/]", False: "[red]missing[/]", None: "[yellow]?[/]"}[present]


@data_app.command("list")
def list_command(data_dir: Path | None = DATA_DIR) -> None:
    """Show every data source: splits, sizes, shape, origin, and whether its files are here."""
    root = resolve_data_dir(data_dir)
    table = Table(title=f"tripwire data sources (data dir: {root})", show_lines=True)
    for col in ("name", "description", "splits (images)", "shape", "origin", "files"):
        table.add_column(col, overflow="fold")
    for s in list_sources():
        splits = "\n".join(f"{sp}: {s.sizes[sp]:,}" if sp in s.sizes else sp for sp in s.splits)
        if s.needs_files:
            files = "\n".join(f"{sp}: {_status(s.files_present(sp, root))}" for sp in s.splits)
        else:
            files = "[cyan]generated[/]"
        shape = "×".join(str(d) for d in s.image_shape)
        table.add_row(s.name, s.description, splits, shape, s.origin, files)
    Console().print(table)


def _load_for_preview(name: str, split: str | None, data_dir: Path | None) -> ImageSet:
    path = Path(name)
    if path.exists() and (path.is_dir() or path.suffix):
        return load_user_data(path)
    return get_source(name).load(split, data_dir)


def save_grid(images: ImageSet, out: Path, n: int = 64, seed: int = 0, title: str = "") -> int:
    """Save a grid of `n` seeded-random images of a set (labels as captions) to `out`; returns
    how many were drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sample = images.take(n, seed=seed)
    x = sample.as_float()
    k = len(sample)
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols, 1.2 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= k:
            continue
        img = x[i].permute(1, 2, 0).numpy()
        if img.shape[2] == 1:
            ax.imshow(img[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        if sample.labels is not None:
            ax.set_title(str(int(sample.labels[i])), fontsize=7, pad=1)
    fig.suptitle(title or sample.name, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return k


@data_app.command("preview")
def preview_command(
    name: Annotated[
        str,
        typer.Argument(
            help="A source name (see `tripwire data list`), or a path to your own .npz / image "
            "folder."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to save the grid (PNG).")] = Path(
        "grid.png"
    ),
    split: Annotated[
        str | None, typer.Option("--split", help="Split (default: the source's first).")
    ] = None,
    n: Annotated[int, typer.Option("--n", min=1, max=1024, help="How many images to show.")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random sample shown.")] = 0,
    data_dir: Path | None = DATA_DIR,
) -> None:
    """Save a grid of sample images of a data source (or of your own data) as a PNG."""
    images = _load_for_preview(name, split, data_dir)
    shape = "×".join(str(d) for d in images.image_shape)
    k = save_grid(images, out, n, seed, f"{images.name} ({len(images):,} images, {shape})")
    Console().print(f"{k} of {len(images):,} images of {images.name} → {out}", highlight=False)


app.add_typer(data_app, name="data")
