"""`tripwire fit` and `tripwire score`: fit a detector once, then score inputs with it."""

from __future__ import annotations

import csv
import logging
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tripwire.cli import app
from tripwire.cli.options import (
    CACHE_DIR,
    DATA_DIR,
    DEVICE,
    MODEL_HELP,
    OUTPUT,
    PARAM,
    THREADS,
    WEIGHTS,
    output_choice,
    parse_params,
    resolve_device,
    set_threads,
    to_device,
)
from tripwire.data import get_source, load_source
from tripwire.data.base import ImageSet
from tripwire.data.stream import open_image_stream
from tripwire.data.transforms import conform
from tripwire.data.user import load_user_data
from tripwire.detectors import DEFAULT_DETECTOR, Detector, create_detector, list_detectors
from tripwire.detectors.fileformat import read_key, writing
from tripwire.errors import DataError, InvalidInputError
from tripwire.models.reference import ModelReference
from tripwire.paths import atomic_write

if TYPE_CHECKING:
    import torch

    from tripwire.guard import Guard

console = Console()
logger = logging.getLogger(__name__)


def model_option(default: str | None) -> Any:  # typer's OptionInfo, typed as the value
    return typer.Option(default, "--model", help=MODEL_HELP)


_FIT_OUT = typer.Option(..., "--out", help="Folder to write the fitted detector to.")
DETECTOR_DIR = typer.Option(..., "--detector", help="A folder written by `tripwire fit`.")
_INPUT = typer.Option(
    ..., "--input", help=".npz (x: uint8 N×H×W[×C] or float in [0, 1]) or a folder of images."
)
_CSV_OUT = typer.Option(
    ..., "--out", help="CSV: index, predicted_class, score, is_anomaly (and file, for a folder)."
)
SIGNING_KEY = typer.Option(
    None,
    "--signing-key",
    help="A file holding a secret key (≥ 16 bytes). fit signs the detector with it (HMAC-SHA256); "
    "score then refuses a detector not signed with the same key.",
)


def _load_data(spec: str, split: str, data_dir: Path | None) -> ImageSet:
    path = Path(spec)
    if path.exists():
        return load_user_data(path)
    return load_source(spec, split, data_dir)


@app.command("fit")
def fit_command(
    out: Path = _FIT_OUT,
    model: str = model_option("lenet-mnist"),
    weights: Path | None = WEIGHTS,
    output: str = OUTPUT,
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
    calibration_data: str | None = typer.Option(
        None,
        "--calibration-data",
        help="In-distribution images the model never trained on, for the thresholds: a source "
        "name (its validation half, the fixed half of its test split that `tripwire bench` never "
        "scores), an .npz or an image folder. Default: for a zoo model the images its recipe "
        "keeps out of training, else the validation half of the --data source; for --data given "
        "as a file or folder, a held-out share of it (with a warning: the model may have trained "
        "on those).",
    ),
    calibration_fraction: float = typer.Option(
        0.1,
        help="Share of --data held out for the thresholds when --data is a file or folder and "
        "no --calibration-data is given.",
    ),
    tpr: float = typer.Option(0.95, help="Share of held-out ID inputs each threshold accepts."),
    seed: int = typer.Option(0, help="Seed of the calibration split (and the zoo model copy)."),
    signing_key: Path | None = SIGNING_KEY,
    data_dir: Path | None = DATA_DIR,
    cache_dir: Path | None = CACHE_DIR,
    threads: int | None = THREADS,
    device: str | None = DEVICE,
) -> None:
    """Fit a detector for a model on in-distribution data, calibrate its thresholds, save it.

    The save is atomic: a detector already in --out stays usable until the new one replaces it,
    and a second `tripwire fit` to the same --out stops at once.
    """
    set_threads(threads)
    key = None if signing_key is None else read_key(signing_key)
    det = create_detector(detector, **parse_params(param))  # bad options: before any work
    resolve_device(device)
    with writing(out):  # held from here: a second fit to --out stops before fitting
        ref = ModelReference(
            model, None if weights is None else str(weights), seed, output=output_choice(output)
        )
        net = to_device(ref.load(data_dir, cache_dir), device)
        fit_set, calib_set, data = _fit_and_calibration_sets(
            ref, data, calibration_data, calibration_fraction, seed, data_dir
        )
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
        det.save(out, key=key)
        seconds = time.perf_counter() - start
        console.print(
            f"fitted [bold]{det.name}[/] for {escape(model)} on {len(fit_set)} images of "
            f"{escape(data)}, thresholds on {len(calib_set)} images of {escape(calib_set.name)} "
            f"({seconds:.1f} s) → {escape(str(out))}"
        )
    choice = det.layer_choice_criteria()
    if choice is not None:
        layer, criterion = choice
        aggregate = det.get_params().get("layer_criterion", "mean")
        console.print(_layer_choice_table(criterion, layer, aggregate))


def _fit_and_calibration_sets(
    ref: ModelReference,
    data: str | None,
    calibration_data: str | None,
    calibration_fraction: float,
    seed: int,
    data_dir: Path | None,
) -> tuple[ImageSet, ImageSet, str]:
    """(fit images, calibration images, the name of the fit data) for `tripwire fit`.

    Calibration images must be ones the model never trained on (`Detector.calibrate`): the given
    --calibration-data; else the images a zoo recipe keeps out of training; else the validation
    half of a named source's test split; only for --data given as a file or folder a held-out
    share of it, with a warning.
    """
    from tripwire.models.zoo import get_recipe, training_split

    calib_set = None
    if data is None:
        if not ref.is_zoo:
            raise InvalidInputError("--data is required for a model that is not in the zoo")
        data = get_recipe(ref.name).source
        fit_set, calib_set = training_split(ref.name, data_dir)  # held-out part, or None
    else:
        fit_set = _load_data(data, "train", data_dir)
    if calibration_data is not None:
        calib_set = _load_data(calibration_data, "validation", data_dir)
    elif calib_set is None and not Path(data).exists() and "test" in get_source(data).splits:
        calib_set = load_source(data, "validation", data_dir)
    elif calib_set is None:
        fit_set, calib_set = fit_set.split(calibration_fraction, seed=seed)
        logger.warning(
            "the thresholds are set on %d images held out of %s: if the model was trained on "
            "them, it is more confident on them than on new inputs, and more than 1 − TPR of new "
            "clean inputs will be flagged. Give --calibration-data: in-distribution images the "
            "model never trained on.",
            len(calib_set),
            data,
        )
    return fit_set, calib_set, data


def _layer_choice_table(
    criterion: dict[str, float], chosen: str, aggregate: str = "mean", top: int = 10
) -> Table:
    """The candidate layers in model order with their criterion (the `aggregate` of their
    AUROCs over the validation sets); of many (a ResNet has 131), only the `top` best and the
    chosen one."""
    best = set(sorted(criterion, key=criterion.__getitem__, reverse=True)[:top]) | {chosen}
    shown = [layer for layer in criterion if layer in best]
    title = f"layer choice ({aggregate} AUROC against validation anomalies, no test sets)"
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
    detector: Path = DETECTOR_DIR,
    input: Path = _INPUT,
    out: Path = _CSV_OUT,
    model: str | None = model_option(None),
    weights: Path | None = WEIGHTS,
    output: str = OUTPUT,
    batch_size: int = typer.Option(256, min=1, help="Images per forward pass."),
    no_resize: bool = typer.Option(
        False,
        "--no-resize",
        help="Refuse images of another size or channel count than the model's, instead of "
        "resizing and converting them (with a warning that counts them).",
    ),
    signing_key: Path | None = SIGNING_KEY,
    data_dir: Path | None = DATA_DIR,
    cache_dir: Path | None = CACHE_DIR,
    threads: int | None = THREADS,
    device: str | None = DEVICE,
) -> None:
    """Score images with a fitted detector; write one CSV row per image.

    The model is --model, or else the zoo model the detector records (stored or already
    trained: `score` never trains, and never runs code a detector file names). A model with
    other weights than the detector was fitted on is refused. The input is read one batch at a
    time, so memory does not grow with the number of images. Bad input: a message, exit code 2,
    and no output file.
    """
    set_threads(threads)
    guard = load_guard(detector, model, weights, output, signing_key, data_dir, cache_dir, device)
    shape = guard.detector.input_shape_
    stream = open_image_stream(input, size=None if no_resize else shape[1:])
    converted: Counter[str] = Counter()
    result = guard.check(
        _fitted(stream.batches(batch_size), shape, converted, no_resize), batch_size
    )
    _write_csv(out, result.predicted, result.scores, result.is_anomaly, stream.files)
    converted.update(stream.resized)
    if converted:
        logger.warning(
            "%d of %d images were converted to the model's input %s (%s); their scores are not "
            "those of images made at that size and colour, and more of them may be flagged. "
            "--no-resize refuses such images.",
            sum(converted.values()),
            stream.count,
            "×".join(map(str, shape)),
            "; ".join(f"{n} × {what}" for what, n in converted.most_common()),
        )
    n_flagged = int(result.is_anomaly.sum())
    console.print(
        f"scored {stream.count} images: {n_flagged} flagged as anomalous "
        f"({100 * n_flagged / stream.count:.1f} %) → {out}"
    )


def load_guard(
    detector: Path,
    model: str | None,
    weights: Path | None,
    output: str,
    signing_key: Path | None,
    data_dir: Path | None,
    cache_dir: Path | None,
    device: str | None,
) -> Guard:
    """The saved `detector` bound to --model, or else to the zoo model it records (stored or
    already trained: never trained here, and no code a detector file names is run)."""
    from tripwire.guard import Guard

    det = Detector.load(detector, key=None if signing_key is None else read_key(signing_key))
    if model is not None:
        ref = ModelReference(
            model,
            None if weights is None else str(weights),
            train_if_missing=False,
            output=output_choice(output),
        )
    else:
        ref = ModelReference.recorded_zoo_model(det.model_ref_)
    return Guard(to_device(ref.load(data_dir, cache_dir), device), det)


def _fitted(
    batches: Iterator[torch.Tensor],
    shape: tuple[int, int, int],
    converted: Counter[str],
    refuse: bool,
) -> Iterator[torch.Tensor]:
    """The batches converted to `shape` (`conform`), each conversion counted in `converted`
    by "C×H×W → c×h×w" — or, with `refuse`, a `DataError` at the first image that needs one."""
    for x in batches:
        if tuple(x.shape[1:]) != tuple(shape):
            what = f"{'×'.join(map(str, x.shape[1:]))} → {'×'.join(map(str, shape))}"
            if refuse:
                raise DataError(
                    f"images of {what.split(' →')[0]} where the model takes "
                    f"{'×'.join(map(str, shape))} (C×H×W); convert them first, or score "
                    "without --no-resize to have them resized and converted"
                )
            converted[what] += len(x)
        yield conform(x, shape)


def _write_csv(out: Path, predicted, scores, flags, files: list[str] | None) -> None:  # type: ignore[no-untyped-def]
    """The scores as CSV, written atomically (a file name column for folder input)."""
    header = ["index", "predicted_class", "score", "is_anomaly"] + (["file"] if files else [])
    try:
        with atomic_write(out) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            rows = zip(predicted.tolist(), scores.tolist(), flags.tolist(), strict=True)
            for i, (p, s, a) in enumerate(rows):
                writer.writerow([i, p, f"{s:.8g}", int(a)] + ([files[i]] if files else []))
    except OSError as e:
        raise InvalidInputError(f"{out}: cannot write the scores ({e.strerror})") from None
