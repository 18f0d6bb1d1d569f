"""Where tripwire looks for data and keeps its cache (trained models, generated anomalies), and
the digest that checks a file there is the one expected."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

DATA_ENV = "TRIPWIRE_DATA"
CACHE_ENV = "TRIPWIRE_CACHE"


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data directory: `explicit`, else `$TRIPWIRE_DATA`, else `~/.cache/tripwire/data`."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return cache_dir() / "data"


def cache_dir(explicit: str | Path | None = None) -> Path:
    """The cache directory: `explicit`, else `$TRIPWIRE_CACHE`, else `~/.cache/tripwire`."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "tripwire"


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``hashlib`` algorithm name), read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
