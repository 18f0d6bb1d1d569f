"""The registry of detectors by name, which the CLI and the contract tests are driven by.

Examples:
    >>> from tripwire.detectors import create_detector, list_detectors
    >>> "uniform" in list_detectors()
    True
    >>> det = create_detector("uniform", nu=0.1)
"""

from __future__ import annotations

import inspect
import json
from typing import TYPE_CHECKING, Any, TypeVar

from tripwire.errors import InvalidInputError, TripwireError
from tripwire.registry import Registry

if TYPE_CHECKING:  # the registry sits below the Detector base class, which looks names up here
    from tripwire.detectors.base import Detector

D = TypeVar("D", bound="type[Detector]")

_DETECTORS: Registry[type[Detector]] = Registry("detector", TripwireError)

# What `tripwire fit` uses without --detector: the paper's views plus confidence, ViM and Gram
# views, fused one-sidedly, chosen on validation data only (research/notebook.md, "A default for
# natural-image CNNs"). The paper's recipe stays available as "uniform", the previous default
# as "uniform-plus".
DEFAULT_DETECTOR = "uniform-fusion"


def register_detector(cls: D) -> D:
    """Class decorator: make `cls` available under `cls.name`."""
    _DETECTORS.add(cls.name, cls)
    return cls


def get_detector_class(name: str) -> type[Detector]:
    """The detector class registered under `name`."""
    return _DETECTORS.lookup(name)


def create_detector(name: str = DEFAULT_DETECTOR, **params: Any) -> Detector:
    """A new, unfitted detector `name` with hyper-parameters `params`.

    Raises:
        InvalidInputError: a parameter the detector does not take (the message lists those it
            takes), or a value its declaration refuses (`Detector._validate_params`).
    """
    klass = get_detector_class(name)
    accepted = detector_parameters(klass)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        listed = ", ".join(f"{k}={v.default!r}" for k, v in accepted.items()) or "none"
        raise InvalidInputError(
            f"detector {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters (with defaults): {listed}"
        )
    try:
        det = klass(**params)
        det._validate_params()
    except TripwireError:
        raise
    except (TypeError, ValueError) as e:  # a value the detector's declaration refuses
        raise InvalidInputError(f"detector {name!r}: {e}") from None
    return det


def detector_parameters(klass: type[Detector]) -> dict[str, inspect.Parameter]:
    """The keyword parameters of a detector class's ``__init__``, in order, with their defaults."""
    parameters = inspect.signature(klass.__init__).parameters
    return {k: p for k, p in parameters.items() if k != "self"}


def parse_detector_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name:key=value;key=value"`` → (name, {key: value, …}), each value read as JSON where
    it parses (``0.3``, ``true``, ``[1, 2]``), else kept as a string; a bare name → (name, {}).
    Scripts name a detector with settings changed this way: ``gram:orders=[1];layers=deepest``.
    """
    name, _, settings = spec.partition(":")
    params: dict[str, Any] = {}
    for setting in filter(None, settings.split(";")):
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"{spec!r}: settings must look like key=value;key=value")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return name, params


def list_detectors() -> list[str]:
    """Names of all registered detectors, sorted."""
    return _DETECTORS.names()
