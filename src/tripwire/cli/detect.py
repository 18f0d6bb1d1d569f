"""`tripwire fit` and `tripwire score`: fit a detector once, then score inputs with it."""

from __future__ import annotations

import csv
import os
import tempfile
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tripwire.cli import app
from tripwire.cli.options import CACHE_DIR, DATA_DIR, PARAM, THREADS, parse_params, set_threads
from tripwire.data import load_source
from tripwire.data.base import ImageSet
from tripwire.data.transforms import conform
from tripwire.data.user import load_user_data
from tripwire.detectors import DEFAULT_DETECTOR, Detector, create_detector, list_detectors
from tripwire.errors import InvalidInputError
from tripwire.models.reference import ModelReference

console = Console()


def _model_option(default: str | None) -> typer.models.OptionInfo:
    return typer.Option(
        default,
        "--model",
        help="A zoo model (`tripwire models list`) or a user's factory 'package.module:function'.",
    )


_WEIGHTS = typer.Option(None, "--weights", help="safetensors weights for an entry-point model.")
_FIT_OUT = typer.Option(..., "--out", help="Folder to write the fitted detector to.")
_DETECTOR_DIR = typer.Option(..., "--detector", help="A folder written by `tripwire fit`.")
_INPUT = typer.Option(
    ..., "--input", help=".npz (x: uint8 N×H×W[×C] or float in [0, 1]) or a folder of images."
)
_CSV_OUT = typer.Option(..., "--out", help="CSV: index, predicted_class, score, is_anomaly.")


def _load_data(spec: str, split: str, data_dir: Path | None) -> ImageSet:
    path = Path(spec)
    if path.exists():
        return load_user_data(path)
    return load_source(spec, split, data_dir)


@app.command("fit")
def fit_command(
    out: Path = _FIT_OUT,
    model: str = _model_option("lenet-mnist"),
    weights: Path | None = _WEIGHTS,
    data: str | None = typer.Option(
        None,
        "--data",
        help="In-distribution training data: a source name (its train split) or an .npz / "
        "image folder. Default: the zoo model's training set.",
    ),
    detector: str = typer.Option(
        DEFAULT_DETECTOR, "--detector", help=f"One of: {', '.join(list_detectors())}."
    ),
    param: list[str] = PARAM,
    calibration_fraction: float = typer.Option(
        0.1,
        help="Share of the data held out to set the per-class thresholds (unused with a zoo "
        "model's own training data when its recipe keeps calibration images out of training).",
    ),
    tpr: float = typer.Option(0.95, help="Share of held-out ID inputs each threshold accepts."),
    seed: int = typer.Option(0, help="Seed of the calibration split (and the zoo model copy)."),
    data_dir: Path | None = DATA_DIR,
    cache_dir: Path | None = CACHE_DIR,
    threads: int | None = THREADS,
) -> None:
    """Fit a detector for a model on in-distribution data, calibrate its thresholds, save it."""
    set_threads(threads)
    ref = ModelReference(model, None if weights is None else str(weights), seed)
    net = ref.load(data_dir, cache_dir)
    calib_set = None
    if data is None:
        if not ref.is_zoo:
            raise InvalidInputError("--data is required for a model that is not in the zoo")
        from tripwire.models.zoo import get_recipe, training_split

        data = get_recipe(model).source
        fit_set, calib_set = training_split(model, data_dir)  # images the model never saw
    if calib_set is None:
        fit_set, calib_set = _load_data(data, "train", data_dir).split(
            calibration_fraction, seed=seed
        )
    det = create_detector(detector, **parse_params(param))
    anomalies = None
    if det.needs_anomalies:
        from tripwire.anomalies.fitting import fgsm_of_training_images

        anomalies = fgsm_of_training_images(net, fit_set, 2000, seed=seed, cache_dir=cache_dir)
        console.print(
            f"{detector} fits on known anomalies: {len(anomalies)} FGSM (ε = 0.3) examples of "
            "training images (as the paper trains KD+BU and LID)"
        )
    start = time.perf_counter()
    det.fit(net, fit_set, anomalies=anomalies)
    det.calibrate(net, calib_set, tpr=tpr)
    det.model_ref_ = ref.as_dict()
    det.save(out)
    seconds = time.perf_counter() - start
    console.print(
        f"fitted [bold]{det.name}[/] for {model} on {len(fit_set)} images of {data}, "
        f"thresholds on {len(calib_set)} held-out images ({seconds:.1f} s) → {out}"
    )
    choice = getattr(det, "layer_choice_", None)
    if choice is not None:
        console.print(_layer_choice_table(choice.criterion, choice.layer))


def _layer_choice_table(criterion: dict[str, float], chosen: str, top: int = 10) -> Table:
    """The candidate layers in model order with their criterion; of many (a ResNet has 131),
    only the `top` best and the chosen one."""
    best = set(sorted(criterion, key=criterion.__getitem__, reverse=True)[:top]) | {chosen}
    shown = [layer for layer in criterion if layer in best]
    title = "layer choice (mean AUROC against validation anomalies, no test sets)"
    if len(shown) < len(criterion):
        title += f"; the best {len(shown)} of {len(criterion)} candidates"
    table = Table(title=title)
    table.add_column("layer")
    table.add_column("criterion", justify="right")
    for layer in shown:
        mark = " ← chosen" if layer == chosen else ""
        table.add_row(layer, f"{100 * criterion[layer]:.2f}{mark}")
    return table


@app.command("score")
def score_command(
    detector: Path = _DETECTOR_DIR,
    input: Path = _INPUT,
    out: Path = _CSV_OUT,
    model: str | None = _model_option(None),
    weights: Path | None = _WEIGHTS,
    batch_size: int = typer.Option(256, help="Images per forward pass."),
    data_dir: Path | None = DATA_DIR,
    cache_dir: Path | None = CACHE_DIR,
    threads: int | None = THREADS,
) -> None:
    """Score images with a fitted detector; write one CSV row per image.

    The model is the one the detector records (unless --model is given); a model with other
    weights than the detector was fitted on is refused. Bad input: a message, exit code 2, and
    no output file.
    """
    set_threads(threads)
    from tripwire.guard import Guard

    det = Detector.load(detector)
    if model is not None:
        ref = ModelReference(model, None if weights is None else str(weights))
    else:
        ref = ModelReference.from_dict(det.model_ref_)
    net = ref.load(data_dir, cache_dir)
    guard = Guard(net, det)
    c, h, w = det.input_shape_
    images = load_user_data(input, size=(h, w))
    x = conform(images.as_float(), (c, h, w))
    result = guard(x, batch_size=batch_size)
    _write_csv_atomically(out, result.predicted, result.scores, result.is_anomaly)
    n_flagged = int(result.is_anomaly.sum())
    console.print(
        f"scored {len(x)} images: {n_flagged} flagged as anomalous "
        f"({100 * n_flagged / len(x):.1f} %) → {out}"
    )


def _write_csv_atomically(out: Path, predicted, scores, flags) -> None:  # type: ignore[no-untyped-def]
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "predicted_class", "score", "is_anomaly"])
            for i, (p, s, a) in enumerate(
                zip(predicted.tolist(), scores.tolist(), flags.tolist(), strict=True)
            ):
                writer.writerow([i, p, f"{s:.8g}", int(a)])
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
