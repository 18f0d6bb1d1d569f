"""Reference classifiers (the model zoo) and their training."""

from tripwire.models.digest import weights_digest

__all__ = ["weights_digest"]
