"""Data sources: real sets from a data directory, generated sets, and the user's own files.

Importing this package registers every source; `list_sources()` shows them.
"""

from tripwire.data import (  # noqa: F401  (importing a module registers its sources)
    animal_mnist,
    cifar10,
    digits8,
    fashion_mnist,
    font_letters,
    mnist,
    omniglot,
    photo_crops,
    tiny_imagenet,
)
from tripwire.data.base import (
    ImageSet,
    Source,
    get_source,
    list_sources,
    load_source,
    register_source,
    to_float,
)
from tripwire.data.transforms import conform
from tripwire.data.user import load_image_folder, load_npz, load_user_data

__all__ = [
    "ImageSet",
    "Source",
    "conform",
    "get_source",
    "list_sources",
    "load_image_folder",
    "load_npz",
    "load_source",
    "load_user_data",
    "register_source",
    "to_float",
]
