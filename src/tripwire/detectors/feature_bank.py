"""Detectors that compare an input's penultimate features with a bank of the ID fit images'
(KNN, NNGuide): the bank's rows (a seeded sample of `bank_size` fit images, or all), the exact
search for the largest dot products with it, and its checks.
"""

from __future__ import annotations

import torch

from tripwire.detectors.feature_detector import FeatureDetector
from tripwire.detectors.params import PositiveInt
from tripwire.detectors.state import learned
from tripwire.features import Features

_CHUNK = 65_536  # bank rows per matrix product (bounds memory at batch × chunk floats)


def largest_dot_products(
    z: torch.Tensor, bank: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, bank indices) of the `k` largest dot products of each row of `z` with the rows
    of `bank`, descending; exact, chunk by chunk of the bank."""
    values, indices = [], []
    for start in range(0, len(bank), _CHUNK):
        chunk = bank[start : start + _CHUNK]
        top = (z @ chunk.T).topk(min(k, len(chunk)), dim=1)
        values.append(top.values)
        indices.append(top.indices + start)
    best = torch.cat(values, 1).topk(k, dim=1)
    return best.values, torch.cat(indices, 1).gather(1, best.indices)


def bank_rows(n: int, bank_size: int | None, seed: int, k: int) -> torch.Tensor | slice:
    """Which of `n` fit images enter a feature bank: a seeded sample of `bank_size` (all when
    None or ≥ n; the same sample as `ImageSet.take`). ValueError when fewer than `k` remain."""
    if min(n, bank_size or n) < k:
        raise ValueError(f"k = {k} needs at least {k} fit images, got {min(n, bank_size or n)}")
    if bank_size is None or bank_size >= n:
        return slice(None)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:bank_size]


def check_bank(bank: torch.Tensor, k: int) -> None:
    """Raise ValueError unless a loaded feature bank is finite float64 with ≥ `k` rows."""
    if bank.ndim != 2 or bank.dtype != torch.float64 or len(bank) < k:
        raise ValueError(f"bank must be float64 of ≥ k = {k} rows, got {tuple(bank.shape)}")
    if not bool(torch.isfinite(bank).all()):
        raise ValueError("bank has non-finite entries")


class FeatureBankDetector(FeatureDetector):
    """A detector scoring against `bank_`, a bank of features of the ID fit images; subclasses
    give `k`'s default, fill the bank in `_fit_features` (`bank_rows_of` picks its images) and
    score in `_score_features`.

    Args:
        k: how many of the nearest bank rows the score uses.
        bank_size: keep at most this many fit images in the bank (a seeded sample; None: all).
        seed: seed of that sample.
    """

    uses_penultimate = True

    k: PositiveInt
    bank_size: PositiveInt | None = None
    seed: int = 0

    bank_: torch.Tensor = learned()

    def _check_params(self) -> None:
        if self.bank_size is not None and self.bank_size < self.k:
            raise ValueError(f"bank_size must be None or ≥ k = {self.k}, got {self.bank_size}")

    def bank_rows_of(self, features: Features) -> torch.Tensor | slice:
        """Which fit images enter the bank (`bank_rows` with this detector's settings)."""
        return bank_rows(len(features), self.bank_size, self.seed, self.k)

    def _check_state(self) -> None:
        check_bank(self.bank_, self.k)
