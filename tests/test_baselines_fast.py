"""The fast scoring paths of the baselines against direct float64 computations.

* KD: the precomputed float32 kernel density (one matrix product per class, exponent floored at
  −80 below each row's largest term) equals a float64 logsumexp over all pairwise distances, also
  far from the support where every kernel value underflows; the class-grouped scoring of a batch
  equals the density of each row under its own class's set; `max_per_class` subsamples.
* LID: the one-product squared distances give the MLE of torch.cdist in float64.
* Mahalanobis: ``shrinkage="none"`` is the maximum-likelihood covariance (vs numpy), a singular
  one raises a clear error.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from sklearn.covariance import EmpiricalCovariance
from torch import nn

from tiny_world import trained_world
from tripwire.detectors.kd_bu import KDBUDetector, KernelDensity, log_kernel_density
from tripwire.detectors.lid import lid_mle
from tripwire.detectors.mahalanobis import MahalanobisDetector


def direct_log_kd(z: torch.Tensor, support: torch.Tensor, sigma: float) -> np.ndarray:
    """log KD in float64 from every pairwise squared distance (no expansion, no floor)."""
    sq = ((z.double()[:, None] - support.double()[None]) ** 2).sum(-1).numpy()
    d = z.shape[1]
    return (
        logsumexp(-sq / (2 * sigma**2), axis=1)
        - math.log(len(support))
        - 0.5 * d * math.log(2 * math.pi * sigma**2)
    )


@pytest.mark.parametrize("offset", [0.0, 3.0, 60.0])
def test_kernel_density_equals_float64_direct_sum(offset: float) -> None:
    # offset 60: every kernel value exp(−‖z − s‖²/2σ²) underflows, the log density stays exact.
    g = torch.Generator().manual_seed(0)
    support = torch.relu(torch.randn(700, 84, generator=g)) * 2 + 5
    z = torch.relu(torch.randn(50, 84, generator=g)) * 2 + 5 + offset
    sigma = 3.79
    got = log_kernel_density(z, support, sigma).numpy()
    expected = direct_log_kd(z, support, sigma)
    if offset == 60.0:
        assert np.all(expected < -1e4)  # far below exp's range: a plain sum of kernels would be 0
    np.testing.assert_allclose(got, expected, rtol=2e-6)


def test_kernel_density_is_chunked_without_changing_values() -> None:
    g = torch.Generator().manual_seed(1)
    support, z = torch.randn(300, 6, generator=g), torch.randn(5000, 6, generator=g)
    kd = KernelDensity.of(support, 1.5)
    whole = kd.log_density(z)
    parts = torch.cat([kd.log_density(zb) for zb in z.split(7)])
    torch.testing.assert_close(whole, parts, rtol=1e-6, atol=1e-9)


def _kd_detector(z: torch.Tensor, labels: torch.Tensor, classes: int, **kw: object) -> KDBUDetector:
    det = KDBUDetector(bandwidth=2.0, **kw)  # type: ignore[arg-type]
    det.num_classes_ = classes
    det._store_support(z, labels)
    return det


def test_grouped_kd_scores_each_row_under_its_own_class() -> None:
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 3, (600,), generator=g)  # class 3 has no training input
    z = torch.randn(600, 8, generator=g) + labels.float().unsqueeze(1) * 2
    det = _kd_detector(z, labels, 4)
    zq = torch.randn(90, 8, generator=g) * 2
    pred = torch.randint(0, 4, (90,), generator=g)
    got = det.neg_log_kd(zq, pred)
    for i in range(90):
        c = int(pred[i])
        if c == 3:
            assert got[i] == float("inf")
        else:
            expected = -direct_log_kd(zq[i : i + 1], z[labels == c], 2.0)[0]
            assert float(got[i]) == pytest.approx(expected, rel=2e-6)
    # Batch composition does not matter.
    torch.testing.assert_close(got[:10], det.neg_log_kd(zq[:10], pred[:10]))


def test_max_per_class_subsamples_each_kd_set() -> None:
    g = torch.Generator().manual_seed(3)
    labels = torch.cat([torch.zeros(50), torch.ones(8)]).long()
    z = torch.randn(58, 4, generator=g)
    det = _kd_detector(z, labels, 2, max_per_class=20)
    assert det.counts_.tolist() == [20, 8]
    kept = det.support_[0, :20]
    assert all(bool((z[:50] == row).all(dim=1).any()) for row in kept)  # rows of class 0 only
    again = _kd_detector(z, labels, 2, max_per_class=20)
    assert torch.equal(det.support_, again.support_)  # seeded


@pytest.mark.parametrize("dim", [10, 500])
def test_lid_mle_equals_float64_cdist(dim: int) -> None:
    g = torch.Generator().manual_seed(dim)
    ref = torch.relu(torch.randn(100, dim, generator=g))
    x = torch.relu(torch.randn(64, dim, generator=g))
    r = torch.topk(torch.cdist(x.double(), ref.double()), 20, dim=1, largest=False).values
    expected = -1.0 / torch.log(r / r[:, -1:]).mean(dim=1)
    torch.testing.assert_close(lid_mle(x, ref, k=20), expected, rtol=1e-4, atol=0)


def test_mahalanobis_without_shrinkage_is_the_ml_covariance() -> None:
    model, train, _ = trained_world()
    det = MahalanobisDetector(shrinkage="none").fit(model, train)
    z = model(train.as_float()).detach().double().numpy()
    y = train.labels.numpy()
    means = np.stack([z[y == c].mean(axis=0) for c in range(3)])
    centred = z - means[y]
    cov = EmpiricalCovariance(assume_centered=True).fit(centred).covariance_
    np.testing.assert_allclose(cov, centred.T @ centred / len(z), rtol=1e-10)
    x = train.as_float()[:50]
    zt = model(x).detach().double().numpy()
    prec = np.linalg.inv(cov)
    d2 = np.stack([np.einsum("nd,de,ne->n", zt - m, prec, zt - m) for m in means], axis=1)
    np.testing.assert_allclose(det.score(model, x).numpy(), d2.min(axis=1), rtol=1e-6)


def test_mahalanobis_singular_covariance_is_pseudo_inverted() -> None:
    _, train, val = trained_world()
    net = nn.Sequential(nn.Flatten(), nn.Linear(144, 3)).eval()
    with torch.no_grad():
        net[1].weight[2] = 0.0  # the third logit is constant: Σ is singular
    for shrinkage in ("none", "ledoit-wolf"):
        scores = MahalanobisDetector(shrinkage=shrinkage).fit(net, train).score(net, val)
        assert torch.isfinite(scores).all()


def test_kd_sets_default_to_2000_per_class() -> None:
    labels = torch.cat([torch.zeros(2500), torch.ones(300)]).long()
    z = torch.randn(2800, 3, generator=torch.Generator().manual_seed(4))
    assert _kd_detector(z, labels, 2).counts_.tolist() == [2000, 300]
    assert _kd_detector(z, labels, 2, max_per_class=None).counts_.tolist() == [2500, 300]
