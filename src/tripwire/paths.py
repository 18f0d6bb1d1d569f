"""Where tripwire looks for data and keeps its cache (trained models, generated anomalies), and
the digest that checks a file there is the one expected."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
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
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Write `path` all at once or not at all: yields a temporary path beside it (a name of this
    process's own, so concurrent writers never share one) for the caller to write; on leaving
    the block the file is flushed to disk and renamed over `path` (``os.replace``: readers see
    the old file or the new one, never a part). If the block raises, `path` is left as it was
    and the temporary file removed.

    Examples:
        >>> with atomic_write(folder / "table.csv") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("a,b\\n")
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # umask applies
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
