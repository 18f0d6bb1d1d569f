"""MSP, Energy, ODIN and Mahalanobis against pytorch-ood's implementations on the tiny world.

pytorch-ood comes with ``make setup`` (`pytorch_ood_modules`). The full-size comparison on
LeNet / MNIST vs Fashion-MNIST is `research/crosscheck_pytorch_ood.py`.
"""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr

from pytorch_ood_modules import pytorch_ood_detector
from tiny_world import make_world, trained_world
from tripwire.detectors import create_detector
from tripwire.detectors.mahalanobis import min_mahalanobis
from tripwire.features import extract_features
from tripwire.metrics import auroc


@pytest.fixture(scope="module")
def world():
    model, train, _ = trained_world()
    x_id, _ = make_world(200, seed=2)
    shift = torch.rand(100, 1, 12, 12, generator=torch.Generator().manual_seed(4))
    return model, train, torch.cat([x_id, shift])


def test_msp_and_energy_match(world) -> None:
    model, train, x = world
    theirs = pytorch_ood_detector("softmax").MaxSoftmax(model)(x).double() + 1
    ours = create_detector("msp").fit(model, train).score(model, x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    theirs = pytorch_ood_detector("energy").EnergyBased(model)(x).double()
    ours = create_detector("energy").fit(model, train).score(model, x)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("eps", [0.0, 0.002])
def test_odin_matches(world, eps: float) -> None:
    model, train, x = world
    odin = pytorch_ood_detector("odin").ODIN(model, eps=eps, temperature=1000.0)
    theirs = odin.predict(x).detach().double() + 1
    ours = create_detector("odin", epsilon=eps).fit(model, train).score(model, x)
    if eps == 0:
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    else:  # ours clips x̃ to [0, 1]; theirs does not, and computes softmax in float32
        assert spearmanr(ours.numpy(), theirs.numpy()).statistic > 0.98


def test_mahalanobis_matches_up_to_scale_and_shrinkage(world) -> None:
    model, train, x = world
    logits = extract_features(model, [train.as_float()]).logits
    maha = (
        pytorch_ood_detector("mahalanobis")
        .Mahalanobis(None)
        .fit_features(logits, train.require_labels())
    )
    z = model(x).detach()
    theirs = maha.predict_features(z).double()
    # Their estimator (Σ = un-normalised scatter + 1e-6·I, score ½·min d²) through our distance:
    chol = torch.linalg.cholesky(maha.precision.double())
    present = torch.ones(3, dtype=torch.bool)
    torch.testing.assert_close(
        0.5 * min_mahalanobis(z, maha.mu.double(), chol, present), theirs, rtol=1e-4, atol=1e-9
    )
    # By default ours is the ML Σ = scatter / N, so theirs = ours / (2N) up to their 1e-6 ridge
    # and float32.
    plain = create_detector("mahalanobis").fit(model, train).score(model, x)
    torch.testing.assert_close(plain / (2 * len(train)), theirs, rtol=1e-4, atol=1e-9)
    # With Ledoit–Wolf ours shrinks Σ (strongly here: 700 samples of near-collinear 3-D logits),
    # so the distances differ but both separate the noise shift alike.
    ours = create_detector("mahalanobis", shrinkage="ledoit-wolf").fit(model, train).score(model, x)
    assert spearmanr(ours.numpy(), theirs.numpy()).statistic > 0.9
    assert auroc(ours[:200], ours[200:]) > 0.95 and auroc(theirs[:200], theirs[200:]) > 0.95
