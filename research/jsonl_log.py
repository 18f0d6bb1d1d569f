"""The research scripts' JSON-lines logs: one row per finished unit of work, appended as soon as
it is done, so that a rerun skips what an interrupted run already wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def done_keys(path: Path, fields: tuple[str, ...]) -> set[tuple[Any, ...]]:
    """The `fields` of every row already in `path` (none if it does not exist)."""
    if not path.exists():
        return set()
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {tuple(r[f] for f in fields) for r in rows}


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Print `row` and append it to `path` as one JSON line."""
    line = json.dumps(row)
    print(line, flush=True)
    with path.open("a") as f:
        f.write(line + "\n")
