"""A small cache of decoded data sets as uint8 ``.npy`` files, for sources that are slow to decode
(tens of thousands of JPEGs). Keyed by the source file's path, size and modification time, so a
changed file is decoded afresh. Never pickled: ``numpy.load(allow_pickle=False)``."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tripwire.paths import atomic_write, cache_dir

logger = logging.getLogger(__name__)

CACHE_MIN_SECONDS = 5.0  # only builds slower than this are worth a file in the cache


def _key(source_file: Path, tag: str) -> str:
    st = source_file.stat()
    raw = f"{source_file.resolve()}|{st.st_size}|{st.st_mtime_ns}|{tag}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def cached_arrays(
    name: str,
    source_file: Path,
    tag: str,
    build: Callable[[], dict[str, np.ndarray]],
    cache: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """The arrays `build()` returns for `source_file`, from the cache when there.

    `tag` names the variant (split, recipe version); the arrays are stored as
    ``<cache dir>/data/<name>-<key>-<array>.npy`` when `build` took over `CACHE_MIN_SECONDS`.
    A cache that cannot be read or written is skipped with a log message, never an error.
    """
    folder = cache_dir(cache) / "data"
    stem = f"{name}-{_key(source_file, tag)}"
    done = folder / f"{stem}.done"
    if done.exists():
        try:
            keys = done.read_text().split()
            arrays = {k: np.load(folder / f"{stem}-{k}.npy", allow_pickle=False) for k in keys}
            logger.debug("read %s from the cache %s", name, folder)
            return arrays
        except (OSError, ValueError) as e:
            logger.warning("ignoring unreadable cache of %s in %s (%s)", name, folder, e)
    start = time.perf_counter()
    arrays = build()
    took = time.perf_counter() - start
    if took < CACHE_MIN_SECONDS:
        return arrays
    try:
        for k, a in arrays.items():
            with atomic_write(folder / f"{stem}-{k}.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, a, allow_pickle=False)
        with atomic_write(done) as tmp:
            tmp.write_text(" ".join(arrays))
        logger.info("decoded %s in %.1f s; cached in %s", name, took, folder)
    except OSError as e:
        logger.warning("could not cache %s in %s (%s)", name, folder, e)
    return arrays
