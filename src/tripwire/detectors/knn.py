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

from tripwire.detectors.feature_bank import FeatureBankDetector, largest_dot_products
from tripwire.detectors.params import PositiveInt
from tripwire.detectors.registry import register_detector
from tripwire.features import Features


def kth_neighbour_distance(z: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    """Euclidean distance from each unit row of `z` to its k-th nearest unit row of `bank`.

    Both in float64: in float32 the unit vectors of neighbours closer than ≈ 1e-3 are not told
    apart. Neighbours are ranked by dot product; the distance to the k-th is then computed as
    ‖z − b‖ itself, since 2 − 2 z·b cancels for near rows.
    """
    nearest = largest_dot_products(z, bank, k)[1][:, -1]
    return (z - bank[nearest]).norm(dim=1)


@register_detector
class KNNDetector(FeatureBankDetector):
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

    k: PositiveInt = 50

    def _fit_features(self, model: nn.Module, features: Features) -> None:
        assert features.penultimate is not None
        h = features.penultimate[self.bank_rows_of(features)]
        self.bank_ = nn.functional.normalize(h.double(), dim=1)

    def _score_features(self, features: Features) -> torch.Tensor:
        h = self._penultimate(features, self.bank_.shape[1])
        z = nn.functional.normalize(h.double(), dim=1)
        return kth_neighbour_distance(z, self.bank_.to(z.device), self.k)
