"""`tripwire export`: a saved detector and its model as one file for serving engines."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import typer
from rich.console import Console

from tripwire.cli import app
from tripwire.cli.detect import DETECTOR_DIR, SIGNING_KEY, load_guard, model_option
from tripwire.cli.options import CACHE_DIR, DATA_DIR, DEVICE, OUTPUT, THREADS, WEIGHTS, set_threads
from tripwire.data.base import check_images
from tripwire.data.stream import open_image_stream

console = Console()

_OUT = typer.Option(..., "--out", help="The file to write (.onnx, .pt or .pt2).")
_CHECK_INPUT = typer.Option(
    None,
    "--check-input",
    help="In-distribution images to check the file on besides random ones (.npz or a folder, as "
    "score's --input; the first 64 are used): only real images test the scores near the "
    "thresholds.",
)


@app.command("export")
def export_command(
    detector: Path = DETECTOR_DIR,
    out: Path = _OUT,
    format: str = typer.Option(
        "onnx",
        "--format",
        help="onnx (ONNX Runtime, Triton), torchscript (torch.jit.load, TorchServe, Triton's "
        "pytorch backend) or pt2 (torch.export.load, AOTInductor).",
    ),
    check_input: Path | None = _CHECK_INPUT,
    tolerance: float = typer.Option(
        1e-5,
        help="How far the file's outputs may be from tripwire's, relative to each output or its "
        "scale (the largest threshold; the row's largest logit). Another engine's float32 "
        "rounding, amplified by a detector's conditioning (ViM, RMDS), can exceed 1e-5.",
    ),
    model: str | None = model_option(None),
    weights: Path | None = WEIGHTS,
    output: str = OUTPUT,
    signing_key: Path | None = SIGNING_KEY,
    data_dir: Path | None = DATA_DIR,
    cache_dir: Path | None = CACHE_DIR,
    threads: int | None = THREADS,
    device: str | None = DEVICE,
) -> None:
    """Write the model and a fitted detector (with its thresholds) as one file that runs
    without tripwire.

    The file takes `images` (float32 N×C×H×W in [0, 1], any N) and returns `logits`,
    `predicted`, `scores` and `is_anomaly`. Before it is kept, it is run on random images of
    two batch sizes (and on --check-input) and its outputs are checked against tripwire's (to
    --tolerance of each output or of its scale); a file that does not match is not written.
    Detectors that need input gradients or random passes at scoring time (odin,
    feature-response, kd_bu, fingerprints) and DAAIN (its key is secret) are refused with the
    reason.
    """
    set_threads(threads)
    from tripwire.export import ExportFormat, export_guard

    guard = load_guard(detector, model, weights, output, signing_key, data_dir, cache_dir, device)
    check = None
    if check_input is not None:
        shape = guard.detector.input_shape_
        batch = next(iter(open_image_stream(check_input, size=shape[1:]).batches(64)), None)
        check = None if batch is None else check_images(batch, shape)
    # an unknown format is refused there
    path = export_guard(guard, out, cast(ExportFormat, format), check=check, tolerance=tolerance)
    console.print(
        f"wrote {path} ({format}, {path.stat().st_size / 2**20:.1f} MiB): {guard.detector.name} "
        "on the model; outputs checked against tripwire's"
    )
