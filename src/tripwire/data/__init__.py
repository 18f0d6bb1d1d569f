"""Data sources: real sets from a data directory, generated sets, and the user's own files.

Importing this package registers every source; `list_sources()` shows them.
"""

from tripwire.data import mnist  # noqa: F401  (registers the source)
from tripwire.data.base import (
    ImageSet,
    Source,
    get_source,
    list_sources,
    load_source,
    register_source,
    to_float,
)

__all__ = [
    "ImageSet",
    "Source",
    "get_source",
    "list_sources",
    "load_source",
    "register_source",
    "to_float",
]
