"""Deep nearest neighbours — Sun, Ming, Zhu & Li, "Out-of-Distribution Detection with Deep Nearest
Neighbors" (ICML 2022):

    z(x) = h(x) / ‖h(x)‖₂                 (h: penultimate features, `tripwire.head`)
    s(x) = ‖z(x) − z_(k)‖₂                the distance to the k-th nearest normalised feature of
                                          the ID fit images (higher = more anomalous)

k = 50 with every training image in the bank, the paper's CIFAR-10 setting (its ImageNet setting
is k = 1000 on a 1 % sample: `bank_size`). Exact search in torch, in chunks of the bank: for
unit vectors ‖z − b‖² = 2 − 2 z·b, so the k-th nearest neighbour is the k-th largest dot
product.
"""

from __future__ import annotations

import torch
from torch import nn

from tripwire.detectors.feature_detector import FeatureDetector
from tripwire.detectors.params import PositiveInt
from tripwire.detectors.registry import register_detector
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


def kth_neighbour_distance(z: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    """Euclidean distance from each unit row of `z` to its k-th nearest unit row of `bank`.

    Both in float64: in float32 the unit vectors of neighbours closer than ≈ 1e-3 are not told
    apart. Neighbours are ranked by dot product; the distance to the k-th is then computed as
    ‖z − b‖ itself, since 2 − 2 z·b cancels for near rows.
    """
    nearest = largest_dot_products(z, bank, k)[1][:, -1]
    return (z - bank[nearest]).norm(dim=1)


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


@register_detector
class KNNDetector(FeatureDetector):
    """Distance to the k-th nearest normalised penultimate feature of the ID data (Sun et al.).

    Args:
        k: the neighbour whose distance is the score (paper, CIFAR-10: 50).
        bank_size: keep at most this many fit images in the bank (a seeded sample; None: all,
            as the paper on CIFAR-10).
        seed: seed of that sample.

    Examples:
        >>> det = KNNDetector().fit(model, train).calibrate(model, val)   # doctest: +SKIP
        >>> det.score(model, x)                                            # doctest: +SKIP
    """

    name = "knn"
    uses_penultimate = True

    k: PositiveInt = 50
    bank_size: PositiveInt | None = None
    seed: int = 0

    bank_: torch.Tensor = learned()

    def _check_params(self) -> None:
        if self.bank_size is not None and self.bank_size < self.k:
            raise ValueError(f"bank_size must be None or ≥ k = {self.k}, got {self.bank_size}")

    def _fit_features(self, model: nn.Module, features: Features) -> None:
        assert features.penultimate is not None
        h = features.penultimate[bank_rows(len(features), self.bank_size, self.seed, self.k)]
        self.bank_ = nn.functional.normalize(h.double(), dim=1)

    def _score_features(self, features: Features) -> torch.Tensor:
        h = self._penultimate(features, self.bank_.shape[1])
        z = nn.functional.normalize(h.double(), dim=1)
        return kth_neighbour_distance(z, self.bank_.to(z.device), self.k)

    def _check_state(self) -> None:
        check_bank(self.bank_, self.k)
