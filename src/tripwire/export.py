"""Write a `Guard` — classifier, detector and thresholds — as one file that runs without tripwire.

Formats:

* ``"onnx"``: an ONNX graph (``torch.onnx.export``, the ``torch.export``-based exporter) for ONNX
  Runtime, Triton's ``onnxruntime`` backend and other ONNX engines;
* ``"torchscript"``: a traced TorchScript module (``torch.jit.trace``), for ``torch.jit.load``,
  TorchServe and Triton's ``pytorch`` backend;
* ``"pt2"``: a ``torch.export`` program (``torch.export.save``), for ``torch.export.load`` and
  AOTInductor.

Every file takes one input, ``images`` (float32 N×C×H×W in [0, 1], any N), and gives four
outputs in this order: ``logits`` (N×K), ``predicted`` (N, int64), ``scores`` (N, higher = more
anomalous) and ``is_anomaly`` (N, bool: ``score > threshold[predicted]``). The detector's fitted
state and thresholds are constants of the graph.

After writing, `export_guard` runs the file (ONNX through ``onnxruntime`` when it is installed)
on random images of two batch sizes and checks its outputs against the Python guard's; an
`ExportError` says where they differ. Detectors that need input gradients or random passes at
scoring time declare why they cannot be exported (``Detector.export_refusal``); asking for one
raises `NotExportableError`.

Examples:
    >>> guard = Guard(model, Detector.load("det/"))                      # doctest: +SKIP
    >>> export_guard(guard, "guard.onnx", "onnx")                        # doctest: +SKIP
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import nn

from tripwire.errors import InvalidInputError, TripwireError
from tripwire.features import eval_mode, model_device, model_dtype
from tripwire.guard import Guard, GuardResult
from tripwire.paths import atomic_write

logger = logging.getLogger(__name__)

ExportFormat = Literal["onnx", "torchscript", "pt2"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}
INPUT_NAME = "images"
OUTPUT_NAMES: tuple[str, ...] = GuardResult._fields
# outputs of the file against the Python guard's b: |a − b| ≤ TOLERANCE · max(|b|, scale), the
# scale being the largest threshold for scores and the row's largest logit for logits (at least
# 1): float32 sums that cancel, such as squared distances by expansion, round differently in
# every engine, and near a score of 0 that rounding is not small relative to the score itself
TOLERANCE = 1e-5


class NotExportableError(TripwireError):
    """The detector cannot be written as a graph (it needs input gradients, random passes, …)."""


class ExportError(TripwireError):
    """An exported file does not give the Python guard's outputs, or could not be written."""


class _TupleOutputs(nn.Module):
    """The guard with its outputs as a plain tuple (what every format carries)."""

    def __init__(self, guard: Guard) -> None:
        super().__init__()
        self.guard = guard

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.guard(images))


def export_guard(
    guard: Guard,
    path: str | Path,
    format: ExportFormat = "onnx",
    *,
    example: torch.Tensor | None = None,
    check: torch.Tensor | None = None,
    tolerance: float = TOLERANCE,
    seed: int = 0,
) -> Path:
    """Write `guard` to `path` in `format` (see the module docstring), atomically, and check
    the file against the guard on `example`, 7 random images and `check`. `example` (a batch of
    the model's input shape; default: 4 random images drawn with `seed`) is what the graph is
    traced on; `check` (optional, any number) should be real in-distribution images: random
    images are far from the data, and only real ones test the scores near the thresholds.
    `tolerance`: how far the file's outputs may be from the guard's, relative to each output
    or its scale (see `TOLERANCE`); another engine's float32 rounding of the model's features,
    amplified by a detector's conditioning (ViM's α, a covariance's small eigenvalues), can
    exceed the default.

    Raises:
        NotExportableError: the guard's detector declares that it cannot be exported.
        InvalidInputError: an unknown `format`, or an `example` of the wrong shape.
        ExportError: the exporter failed, or the file's outputs differ from the guard's.
    """
    if format not in FORMATS:
        raise InvalidInputError(
            f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}"
        )
    detector = guard.detector
    if detector.export_refusal:
        raise NotExportableError(
            f"{detector.name} cannot be exported: {detector.export_refusal}. Deploy it with "
            "Python (tripwire.guard.Guard), or export a detector that reads one forward pass"
        )
    shape = detector.input_shape_
    device, dtype = model_device(guard.model), model_dtype(guard.model)
    gen = torch.Generator().manual_seed(seed)
    if example is None:
        example = torch.rand(4, *shape, generator=gen)
    batches = [example, torch.rand(7, *shape, generator=gen)]
    if check is not None:
        batches.append(check)
    for label, images in (("example", example), ("check", check)):
        if images is not None and (images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape)):
            raise InvalidInputError(
                f"{label}: expected a batch of images N×{'×'.join(map(str, shape))}, "
                f"got {tuple(images.shape)}"
            )
    if len(example) < 2:  # a batch of 1 would let the tracer fix the batch size
        raise InvalidInputError(f"example: expected at least 2 images, got {len(example)}")
    if not tolerance > 0:
        raise InvalidInputError(f"tolerance must be > 0, got {tolerance}")
    batches = [b.to(device, dtype) for b in batches]
    module = _TupleOutputs(guard).eval()
    target = Path(path)
    with eval_mode(guard.model), torch.no_grad(), atomic_write(target) as tmp:
        guard(batches[0])  # state derived on first use (per device) is a constant of the graph
        try:
            _write(module, batches[0], tmp, format)
            outputs = [_run(tmp, format, images) for images in batches]
        except TripwireError:
            raise
        except Exception as e:  # the exporters and runtimes raise many kinds; name the one
            raise ExportError(
                f"exporting {detector.name} to {format} failed: {type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            ) from e
        for got, images in zip(outputs, batches, strict=True):
            _compare(got, guard, images, format, tolerance)
    return target


def _write(module: nn.Module, example: torch.Tensor, path: Path, format: str) -> None:
    batch = torch.export.Dim("batch", min=1)
    if format == "torchscript":
        torch.jit.save(torch.jit.trace(module, (example,), check_trace=False), str(path))
    elif format == "pt2":
        program = torch.export.export(
            module, (example,), dynamic_shapes=({0: batch},), strict=False
        )
        buffer = io.BytesIO()  # torch.export.save wants a name ending in .pt2, or a buffer
        torch.export.save(program, buffer)
        path.write_bytes(buffer.getvalue())
    else:
        try:
            import onnxscript  # noqa: F401  (the exporter's own dependency)
        except ImportError as e:
            raise ExportError(
                "ONNX export needs the onnx and onnxscript packages: pip install 'tripwire[export]'"
            ) from e
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,  # one file (ONNX's protobuf limit: 2 GB)
            verbose=False,
        )


def _run(path: Path, format: str, images: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of the exported file at `path` on `images`, as CPU tensors."""
    if format == "torchscript":
        out: Any = torch.jit.load(str(path), map_location=images.device)(images)
    elif format == "pt2":
        out = torch.export.load(io.BytesIO(path.read_bytes())).module()(images)
    else:
        try:
            import onnxruntime
        except ImportError:
            logger.warning("onnxruntime is not installed: the ONNX file was written unchecked")
            return []
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {INPUT_NAME: images.detach().cpu().float().numpy()}
        out = [torch.from_numpy(np.asarray(a)) for a in session.run(list(OUTPUT_NAMES), feed)]
    return [t.detach().cpu() for t in out]


def _compare(
    got: list[torch.Tensor], guard: Guard, images: torch.Tensor, format: str, tolerance: float
) -> None:
    """An `ExportError` unless the file's outputs `got` are the guard's on `images` to
    `tolerance` (flags may differ only where a score is that close to its threshold)."""
    if not got:
        return
    logits, predicted, scores, flags = (t.detach().cpu() for t in guard(images))
    problems = []
    thresholds = guard.thresholds.detach().cpu().double()
    scales = {
        "logits": logits.double().abs().amax(dim=1, keepdim=True).clamp_min(1.0),
        "scores": thresholds.abs().max().clamp_min(1.0),
    }
    for label, a, b in (("logits", got[0], logits), ("scores", got[2], scores)):
        if a.shape != b.shape:
            problems.append(f"{label} have shape {tuple(a.shape)}, not {tuple(b.shape)}")
            continue
        gap = (a.double() - b.double()).abs()
        gap = torch.where(a.double() == b.double(), 0.0, gap)  # equal infinities agree
        allowed = tolerance * torch.maximum(b.double().abs(), scales[label])
        if bool((gap > allowed).any()):
            worst = int((gap / allowed).nan_to_num(nan=torch.inf).argmax())
            problems.append(
                f"{label} differ by up to {float(gap.flatten()[worst]):.3g} where "
                f"{float(allowed.flatten()[worst]):.3g} is allowed"
            )
    if not torch.equal(got[1], predicted):
        problems.append("predicted classes differ")
    threshold = thresholds[predicted]
    near = tolerance * torch.maximum(threshold.abs(), scales["scores"])
    clear = (scores.double() - threshold).abs() > near
    if got[3].shape != flags.shape or not torch.equal(got[3][clear], flags[clear]):
        problems.append("flags differ")
    if problems:
        raise ExportError(
            f"the exported {format} file of {guard.detector.name} does not give the guard's "
            "outputs: " + "; ".join(problems) + ". If the gap is float32 rounding that the "
            "detector amplifies, a larger tolerance accepts it"
        )
