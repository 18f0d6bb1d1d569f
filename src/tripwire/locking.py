"""Inter-process locks on files, so that two processes do not write the same thing at once
(a benchmark's output folder, a zoo model's training run)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


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


def is_locked(path: str | Path) -> bool:
    """True while `exclusive_lock(path)` is held, by another process or another ``open`` of it
    (always False where nothing can be locked)."""
    if not Path(path).exists():
        return False
    with exclusive_lock(path, wait=False) as held:
        return not held
