"""`tripwire explain`: guided-backprop feature-response maps as PNGs (Amirian et al. 2018).

For each of the first `--n` images: the original, its response map (guided back-propagation of
the predicted class, `tripwire.guided_backprop`) and the mean local spatial entropy S̄ of the map;
with ``--attack KIND`` also the adversarial image and its response map side by side, as in the
slides' "Original / Adversarial" panels.
"""

from __future__ import annotations

from pathlib import Path

import torch
import typer
from rich.console import Console

from tripwire.cli import app
from tripwire.cli.options import (
    CACHE_DIR,
    DATA_DIR,
    DEVICE,
    MODEL_HELP,
    OUTPUT,
    WEIGHTS,
    output_choice,
    to_device,
)
from tripwire.data.user import load_user_data
from tripwire.detectors.feature_response import local_entropy
from tripwire.errors import InvalidInputError
from tripwire.features import model_device
from tripwire.guided_backprop import guided_backprop_and_logits
from tripwire.models.reference import ModelReference


def _as_picture(t: torch.Tensor) -> torch.Tensor:
    """C×H×W in [0, 1] → H×W (grey) or H×W×3 for imshow."""
    return t[0] if t.shape[0] == 1 else t.permute(1, 2, 0)


def _response_picture(r: torch.Tensor) -> torch.Tensor:
    """|R| summed over channels, scaled to [0, 1] per image."""
    a = r.abs().sum(dim=0)
    return a / a.max().clamp_min(1e-12)


_INPUT = typer.Option(..., "--input", help="Images: .npz/.npy, an image file or a folder.")
_OUT = typer.Option(..., "--out", help="Folder for the PNGs (created).")


@app.command("explain")
def explain_command(
    input_path: Path = _INPUT,
    out: Path = _OUT,
    model_name: str = typer.Option("lenet-mnist", "--model", help=MODEL_HELP),
    weights: Path | None = WEIGHTS,
    output: str = OUTPUT,
    n: int = typer.Option(8, "--n", min=1, help="How many images (the first n)."),
    attack: str | None = typer.Option(
        None, "--attack", help="Also show an adversarial version (e.g. fgsm, bim-b, deepfool)."
    ),
    window: int = typer.Option(5, "--window", min=2, help="Window side for the local entropy."),
    seed: int = typer.Option(0, "--seed", help="Seed of the attack."),
    data_dir: Path | None = DATA_DIR,
    cache_dir: Path | None = CACHE_DIR,
    device: str | None = DEVICE,
) -> None:
    """Write PNGs of original vs guided-backprop response map (and adversarial, with --attack)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    console = Console()
    ref = ModelReference(
        model_name, None if weights is None else str(weights), output=output_choice(output)
    )
    model = to_device(ref.load(data_dir, cache_dir), device)
    data = load_user_data(input_path)
    x = data.as_float(slice(0, n)).to(model_device(model))
    if x.shape[0] == 0:
        raise InvalidInputError(f"{input_path}: no images")
    panels = [("original", x)]
    if attack is not None:
        from tripwire.anomalies import make_anomalies

        with torch.no_grad():
            y = model(x).argmax(dim=1) if data.labels is None else data.labels[: len(x)]
        adv_set = make_anomalies(attack, model, x.cpu(), y.cpu(), seed=seed, cache_dir=cache_dir)
        adv = x.clone()
        adv[adv_set.source_index] = adv_set.images.to(x.device)
        panels.append((attack, adv))
    out.mkdir(parents=True, exist_ok=True)
    maps = []
    for label, images in panels:
        r, logits = guided_backprop_and_logits(model, images)
        maps.append(
            (label, images.cpu(), r.cpu(), logits.argmax(1).cpu(), local_entropy(r, window))
        )
    for i in range(x.shape[0]):
        fig, axes = plt.subplots(1, 2 * len(maps), figsize=(3 * 2 * len(maps), 3.2))
        for j, (label, images, r, pred, ent) in enumerate(maps):
            grey = images.shape[1] == 1
            axes[2 * j].imshow(
                _as_picture(images[i]), cmap="gray" if grey else None, vmin=0, vmax=1
            )
            axes[2 * j].set_title(f"{label}: class {int(pred[i])}")
            axes[2 * j + 1].imshow(_response_picture(r[i]), cmap="inferno", vmin=0, vmax=1)
            axes[2 * j + 1].set_title(f"response, mean S = {float(ent[i]):.2f} bits")
        for ax in axes:
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(out / f"explain-{i:03d}.png", dpi=100)
        plt.close(fig)
    console.print(f"wrote {x.shape[0]} PNG(s) to {out}")
