"""The exceptions tripwire raises on purpose. Catch `TripwireError` to catch them all."""


class TripwireError(Exception):
    """Base class of every error tripwire raises deliberately."""


class DataError(TripwireError):
    """A data file or folder is missing, corrupt, or of the wrong shape, dtype or range."""


class InvalidInputError(TripwireError, ValueError):
    """A batch given to a detector or attack is unusable (NaN/inf, shape, outside [0, 1], empty)."""


class NotFittedError(TripwireError, RuntimeError):
    """A detector was used before `fit` (or `calibrate`, for `predict`)."""


class ModelMismatchError(TripwireError):
    """A saved detector or cached set is used with other model weights than it was made for."""


class FormatError(TripwireError):
    """A saved file is not a valid tripwire file (tampered, truncated, or from elsewhere)."""
