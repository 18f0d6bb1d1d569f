"""Anomaly generators on the zoo LeNet: the success floors of issue 4 with the default settings,
and fooling images reaching the paper's confidence goal."""

from __future__ import annotations

import pytest
import torch

from tripwire.anomalies import get_generator, make_anomalies

pytestmark = pytest.mark.slow

# (kind, success floor) on the first 100 MNIST test images, default settings
FLOORS = [
    ("fgsm", 0.90),
    ("bim-a", 0.99),
    ("bim-b", 0.99),
    ("pgd-linf", 0.99),
    ("cw-l2", 0.99),
    ("jsma", 0.80),
    ("deepfool", 0.99),
]


@pytest.fixture(scope="module")
def test_batch(mnist_test) -> tuple[torch.Tensor, torch.Tensor]:
    sub = mnist_test.subset(slice(0, 100))
    return sub.as_float(), sub.require_labels()


@pytest.mark.parametrize(("kind", "floor"), FLOORS)
def test_success_floor_on_lenet(kind: str, floor: float, lenet_mnist, test_batch) -> None:
    x, y = test_batch
    s = get_generator(kind).generate(lenet_mnist, x, y, seed=0)
    assert len(s) >= 95  # the LeNet gets ≥ 95 of these right
    assert s.summary()["success_rate"] >= floor, s.summary()
    assert float(s.images.min()) >= 0.0 and float(s.images.max()) <= 1.0
    if kind in ("fgsm", "bim-a", "bim-b", "pgd-linf"):
        assert float(s.norms["linf"].max()) <= 0.3 + 1e-6


def test_fooling_images_reach_goal_on_lenet(lenet_mnist) -> None:
    for kind in ("fooling", "fooling-gradient"):
        s = make_anomalies(kind, lenet_mnist, shape=(1, 28, 28), targets=[1, 7], use_cache=False)
        probs = lenet_mnist(s.images).softmax(1).detach()
        p_target = probs.gather(1, s.target[:, None]).squeeze(1)
        assert s.success.all() and (p_target >= 0.9999).all(), (kind, p_target)
