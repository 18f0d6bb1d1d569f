"""The registry of anomaly generators: `register_generator`, `get_generator`, `list_generators`.

Every kind the CLI, the cache and the benchmarks know is registered here by its module.
"""

from __future__ import annotations

from typing import Any, TypeVar

from tripwire.anomalies.base import BaseGenerator
from tripwire.errors import InvalidInputError
from tripwire.registry import Registry

G = TypeVar("G", bound=type[BaseGenerator])

_GENERATORS: Registry[type[BaseGenerator]] = Registry("anomaly kind", InvalidInputError)


def register_generator(cls: G) -> G:
    """Class decorator: make `cls` available as `get_generator(cls.name)`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _GENERATORS.add(cls.name, cls)
    return cls


def get_generator(kind: str, *, batch_size: int | None = None, **params: Any) -> BaseGenerator:
    """A generator of `kind` with `params` overriding its defaults.

    Examples:
        >>> get_generator("fgsm", eps=0.1).params
        {'eps': 0.1}
    """
    return _GENERATORS.lookup(kind)(batch_size=batch_size, **params)


def list_generators() -> list[type[BaseGenerator]]:
    """Every registered generator class (with `name`, `defaults`, `description`), by name."""
    return [_GENERATORS[k] for k in _GENERATORS.names()]
