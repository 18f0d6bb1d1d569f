"""The user's own classifier, usable everywhere a zoo model is: any ``torch.nn.Module`` built by
an importable factory with weights from a safetensors file, or a TorchScript file."""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from tripwire.errors import FormatError, TripwireError
from tripwire.models.weights import load_weights, safetensors_conversion


class EntryPointError(TripwireError):
    """A ``"package.module:factory"`` entry point cannot be imported or does not build a module."""


def resolve_entry_point(entry_point: str) -> object:
    """Import ``"package.module:attribute"`` and return the attribute (dots allowed after ``:``).

    Raises:
        EntryPointError: malformed string, module not importable, or attribute missing.
    """
    module_name, sep, attr = entry_point.partition(":")
    if not sep or not module_name or not attr:
        raise EntryPointError(
            f"entry point {entry_point!r} must look like 'package.module:factory'"
        )
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as e:
        raise EntryPointError(
            f"cannot import module {module_name!r} of {entry_point!r}: {e}"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise EntryPointError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def load_user_model(
    entry_point: str,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    *,
    search_path: str | Path | None = None,
) -> nn.Module:
    """Build the user's model from a factory and load its safetensors weights; eval mode.

    The factory (a function or an ``nn.Module`` class) is called with no arguments, or with
    ``num_classes=…`` when `num_classes` is given. The model must take N×C×H×W images in [0, 1]
    (put any normalisation inside the model) and return logits.

    Args:
        entry_point: ``"package.module:factory"``.
        weights: a ``.safetensors`` state dict for the model (None keeps the factory's weights).
        num_classes: passed to the factory as ``num_classes`` when given.
        search_path: a folder prepended to ``sys.path`` for the import (e.g. the user's project).

    Raises:
        EntryPointError: the factory cannot be imported, called, or does not return a module.
        FormatError: the weights file is missing, corrupt or does not fit the model.

    Examples:
        >>> model = load_user_model("mypkg.nets:make_net", "net.safetensors")  # doctest: +SKIP
    """
    if search_path is not None and str(search_path) not in sys.path:
        sys.path.insert(0, str(search_path))
    factory = resolve_entry_point(entry_point)
    if not callable(factory):
        raise EntryPointError(f"{entry_point!r} is not callable")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    try:
        model = factory(**kwargs)
    except TypeError as e:
        try:
            signature = str(inspect.signature(factory))
        except (TypeError, ValueError):
            signature = "(?)"
        raise EntryPointError(
            f"calling {entry_point}{signature} with {kwargs or 'no arguments'} failed: {e}"
        ) from None
    if not isinstance(model, nn.Module):
        raise EntryPointError(
            f"{entry_point!r} returned a {type(model).__name__}, not a torch.nn.Module"
        )
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def load_model_file(path: str | Path) -> nn.Module:
    """A model file, on the CPU, in eval mode: a `torch.export` program (``torch.export.save``,
    a ``.pt2`` file) or a TorchScript model (``torch.jit.save`` of a scripted or traced model).

    A program is unflattened back into the model's module tree (`torch.export.unflatten`), whose
    layers take hooks: every detector that needs no dropout or gradient rule of its own works on
    it. TorchScript runs as one compiled graph: detectors that read only the logits work on it
    (`Detector.reads_layers`), the others refuse it with a typed error. A model file is code, as
    a ``module:function`` is: load only files you would run.

    Raises:
        FormatError: a `torch.save` file (a state dict or a pickled module, which tripwire never
            unpickles), a program exported for one batch size only, or no model file at all;
            the message says what to give instead.
    """
    path = Path(path)
    if path.suffix == ".pt2":
        return _load_program(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        names = []
    if not any("/code/" in n for n in names):
        raise FormatError(
            f"{path}: not a TorchScript model file. A torch.save file (a state dict or a "
            "pickled model) is never unpickled: give the model as 'module:function' (the "
            "function that builds it) and --weights as safetensors, converted once with "
            f"{safetensors_conversion(path)}"
        )
    try:
        model = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as e:
        raise FormatError(f"{path}: cannot load the TorchScript model ({e})") from None
    return model.eval()


def _load_program(path: Path) -> nn.Module:
    """A `torch.export` program, unflattened into its module tree (see `load_model_file`)."""
    try:
        with warnings.catch_warnings():  # torch's own deprecation notices, not the user's
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.export.load(str(path))
    except Exception as e:  # torch raises many kinds on a damaged or foreign archive
        raise FormatError(f"{path}: cannot load the torch.export program ({e})") from None
    inputs = program.graph_signature.user_inputs
    nodes = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    shapes = [getattr(nodes[name].meta.get("val"), "shape", None) for name in inputs]
    if len(shapes) != 1 or shapes[0] is None or len(shapes[0]) != 4:
        raise FormatError(
            f"{path}: the program takes {len(shapes)} input(s); tripwire gives a classifier one "
            "batch of images N×C×H×W"
        )
    if isinstance(shapes[0][0], int):
        raise FormatError(
            f"{path}: the program was exported for batches of exactly {shapes[0][0]} images; "
            "export it with a dynamic batch size (and an example batch of at least 2): "
            "torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.export.unflatten(program).eval()
