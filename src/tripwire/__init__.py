"""tripwire: tell when an image classifier is fed something it should not trust.

Out-of-distribution images, adversarial examples and noise / fooling images are detected
in one uniform framework, fitted from in-distribution data alone.
"""

from tripwire.errors import DataError, InvalidInputError, NotFittedError, TripwireError

__version__ = "0.1.0"

__all__ = ["DataError", "InvalidInputError", "NotFittedError", "TripwireError", "__version__"]
