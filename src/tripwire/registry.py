"""One registry type for the named things tripwire looks up: detectors, anomaly generators, data
sources, zoo models and benchmark suites. Each is registered once; looking up an unknown name
raises that registry's error (a `TripwireError`) listing the known names."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tripwire.errors import TripwireError

T = TypeVar("T")


class Registry(dict[str, T]):
    """Named items of one kind: a dict with a checked `add` and a `lookup` that says what exists
    (`get` stays the dict's own).

    Examples:
        >>> suites = Registry[int]("suite", TripwireError)
        >>> suites.add("a", 1)
        1
        >>> suites.lookup("b")
        Traceback (most recent call last):
        ...
        tripwire.errors.TripwireError: unknown suite 'b'; known suites: a
    """

    def __init__(
        self,
        kind: str,
        error: type[TripwireError],
        hint: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__()
        self.kind, self.error, self.hint = kind, error, hint

    def add(self, name: str, item: T) -> T:
        """Register `item` as `name`; ValueError when another item has that name."""
        if name in self and self[name] is not item:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self[name] = item
        return item

    def lookup(self, name: str) -> T:
        """The item called `name`, or the registry's error listing the known names (and its
        hint)."""
        try:
            return self[name]
        except KeyError:
            message = f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}"
            if self.hint is not None:
                message += f". {self.hint(name)}"
            raise self.error(message) from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self)
