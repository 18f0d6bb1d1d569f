"""Where tripwire looks for data and keeps its cache (trained models, generated anomalies), the
digest that checks a file there is the one expected, and the lock that keeps two processes from
writing the same folder."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
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


@contextlib.contextmanager
def exclusive_lock(path: str | Path, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on the file `path` (POSIX ``flock``; created if missing).

    With ``wait=False`` it does not block: the context yields False when another process holds
    the lock (the caller then refuses to go on), True when this one has it. Where ``fcntl`` is
    missing (not POSIX) nothing is locked and it yields True.
    """
    try:
        import fcntl
    except ImportError:
        yield True
        return
    lock = Path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
