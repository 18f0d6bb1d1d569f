"""Types of detector hyper-parameters.

Each detector declares its hyper-parameters once, as the typed arguments of its ``__init__``; a
hint says what a parameter accepts (its type, range or choices) with the types below.
`Detector._validate_params` checks the values against these hints at `fit` and at `load`
(strictly: nothing coerced, booleans are not integers), and a detector adds only the rules that
tie two parameters together (`Detector._check_params`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import Field

PositiveInt = Annotated[int, Field(ge=1)]
"""An integer ≥ 1."""

Positive = Annotated[float, Field(gt=0)]
"""A number > 0."""

NonNegative = Annotated[float, Field(ge=0)]
"""A number ≥ 0."""

OpenFraction = Annotated[float, Field(gt=0, lt=1)]
"""A number in (0, 1), e.g. the share of the fit data held out."""

Fraction = Annotated[float, Field(gt=0, le=1)]
"""A number in (0, 1], e.g. a one-class SVM's ν or a p-value."""

Percentile = Annotated[float, Field(ge=0, lt=100)]
"""A percentile in [0, 100)."""

Names = Annotated[Sequence[str], Field(min_length=1)]
"""A non-empty list of names (e.g. of layers); a single string is not accepted as one."""

Grid = Annotated[Sequence[NonNegative], Field(min_length=1)]
"""A non-empty list of numbers ≥ 0 to choose from (e.g. perturbation magnitudes)."""
