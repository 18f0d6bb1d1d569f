"""The registry of detectors by name, which the CLI and the contract tests are driven by.

Example:
    >>> from tripwire.detectors import create_detector, list_detectors
    >>> "uniform" in list_detectors()
    True
    >>> det = create_detector("uniform", nu=0.1)
"""

from __future__ import annotations

from typing import Any, TypeVar

from tripwire.detectors.base import Detector
from tripwire.errors import TripwireError

D = TypeVar("D", bound=type[Detector])

_DETECTORS: dict[str, type[Detector]] = {}

# What `tripwire fit` uses without --detector: the paper's views plus confidence and ViM views,
# fused one-sidedly, chosen on validation data only (docs/benchmarks.md, "A default for
# natural-image CNNs"). The paper's recipe stays available as "uniform", the previous default
# as "uniform-plus".
DEFAULT_DETECTOR = "uniform-fusion"


def register_detector(cls: D) -> D:
    """Class decorator: make `cls` available under `cls.name`."""
    if cls.name in _DETECTORS and _DETECTORS[cls.name] is not cls:
        raise ValueError(f"detector name {cls.name!r} registered twice")
    _DETECTORS[cls.name] = cls
    return cls


def get_detector_class(name: str) -> type[Detector]:
    """The detector class registered under `name`."""
    try:
        return _DETECTORS[name]
    except KeyError:
        known = ", ".join(sorted(_DETECTORS))
        raise TripwireError(f"unknown detector {name!r}; known detectors: {known}") from None


def create_detector(name: str = DEFAULT_DETECTOR, **params: Any) -> Detector:
    """A new, unfitted detector `name` with hyper-parameters `params`."""
    return get_detector_class(name)(**params)


def list_detectors() -> list[str]:
    """Names of all registered detectors, sorted."""
    return sorted(_DETECTORS)
