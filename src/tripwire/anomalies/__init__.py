"""Anomaly generators: white-box attacks, noise and fooling images behind one protocol.

Every generator is registered by name (`list_generators()`) and returns an `AnomalySet`;
`make_anomalies(kind, model, x, y, ...)` is the one-call entry point with an on-disk cache.

Examples:
    >>> from tripwire.anomalies import make_anomalies
    >>> adv = make_anomalies("fgsm", model, x, y, eps=0.3)  # doctest: +SKIP
"""

from tripwire.anomalies import bim, cw, deepfool, fgsm, fooling, jsma, noise, one_pixel, pgd  # noqa: F401
from tripwire.anomalies.base import AnomalySet, BaseGenerator, Generator
from tripwire.anomalies.cache import make_anomalies
from tripwire.anomalies.registry import get_generator, list_generators, register_generator

__all__ = [
    "AnomalySet",
    "BaseGenerator",
    "Generator",
    "get_generator",
    "list_generators",
    "make_anomalies",
    "register_generator",
]
