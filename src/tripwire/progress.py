"""Progress bars for anything long, switchable off.

Library code wraps long loops in `track(...)`. Bars are shown on a terminal unless
`TRIPWIRE_PROGRESS=0` is set or `set_progress(False)` was called; the CLI's `--quiet` does that.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

logger = logging.getLogger("tripwire")

_enabled: bool | None = None
_active: Progress | None = None  # the bar on screen, which nested loops add their rows to


def set_progress(enabled: bool) -> None:
    """Switch progress bars on or off for this process."""
    global _enabled
    _enabled = enabled


def progress_enabled() -> bool:
    """Whether progress bars are shown (explicit setting, else `TRIPWIRE_PROGRESS`, default on)."""
    if _enabled is not None:
        return _enabled
    return os.environ.get("TRIPWIRE_PROGRESS", "1") not in ("0", "false", "no", "")


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over `items`, showing a progress bar when enabled (a plain loop otherwise).

    A loop inside another tracked loop (a detector's feature pass inside the demo's loop over
    detectors) adds its bar below the outer one for as long as it runs.
    """
    global _active
    if not progress_enabled():
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if _active is not None:
        outer = _active
        task = outer.add_task(description, total=total)
        try:
            for item in items:
                yield item
                outer.advance(task)
        finally:
            outer.remove_task(task)
        return
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        _active = bar
        try:
            task = bar.add_task(description, total=total)
            for item in items:
                yield item
                bar.advance(task)
        finally:
            _active = None
