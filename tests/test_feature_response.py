"""Feature-response-map entropy: the entropy's extremes, its invariances, the detector."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tiny_world import make_world, trained_world
from tripwire.detectors import Detector, FeatureResponseDetector
from tripwire.detectors.feature_response import local_entropy
from tripwire.errors import InvalidInputError


def test_all_mass_on_one_pixel_gives_zero() -> None:
    r = torch.zeros(2, 1, 12, 12)
    r[0, 0, 4, 7] = 3.0  # one pixel: every window holds it alone or holds nothing
    r[1, 0, 0, 0] = -1.0
    torch.testing.assert_close(local_entropy(r, 5), torch.zeros(2, dtype=torch.float64))


def test_evenly_spread_mass_gives_the_maximum() -> None:
    for w in (3, 5, 7):
        ent = local_entropy(torch.full((1, 3, 16, 16), 0.2), w)
        assert ent.item() == pytest.approx(math.log2(w * w))


def test_uniform_random_map_is_near_the_maximum() -> None:
    g = torch.Generator().manual_seed(0)
    ent = local_entropy(torch.rand(4, 1, 28, 28, generator=g), 5)
    # E[S] for 25 i.i.d. U(0, 1) weights is about log2(25) − 0.28 bits.
    assert (ent <= math.log2(25)).all() and (ent > math.log2(25) - 0.4).all()


def test_peaked_map_has_lower_entropy_than_a_spread_one() -> None:
    g = torch.Generator().manual_seed(1)
    spread = torch.rand(1, 1, 20, 20, generator=g)
    peaked = spread**8  # same support, mass concentrated on the largest pixels
    assert local_entropy(peaked, 5) < local_entropy(spread, 5) - 0.5


def test_scale_and_sign_invariance() -> None:
    g = torch.Generator().manual_seed(2)
    r = torch.randn(3, 2, 10, 10, generator=g)
    torch.testing.assert_close(local_entropy(-7.5 * r, 3), local_entropy(r, 3))


def test_window_larger_than_map_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        local_entropy(torch.rand(1, 1, 4, 4), 5)


@pytest.fixture(scope="module")
def world():  # type: ignore[no-untyped-def]
    model, train, val = trained_world()
    return model, train, val, make_world(200, seed=2)[0]


def test_score_is_the_class_standardised_entropy(world) -> None:  # type: ignore[no-untyped-def]
    model, train, _, test = world
    det = FeatureResponseDetector(window=5).fit(model, train)
    ent, pred = det.entropy(model, test[:50])
    expected = (ent.double() - det.mean_[pred, 0]) / det.std_[pred, 0]
    torch.testing.assert_close(det.score(model, test[:50]), expected)
    two = FeatureResponseDetector(window=5, direction="two-sided").fit(model, train)
    torch.testing.assert_close(two.score(model, test[:50]), expected.abs())


@pytest.mark.slow
def test_fused_with_uniform_save_load(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, train, val, test = world
    det = FeatureResponseDetector(window=7, fuse_with="uniform").fit(model, train)
    assert det.uniform_ is not None
    det.calibrate(model, val)
    loaded = Detector.load(det.save(tmp_path / "frm"))
    assert isinstance(loaded, FeatureResponseDetector) and loaded.uniform_ is not None
    torch.testing.assert_close(
        loaded.score(model, test[:40]), det.score(model, test[:40]), rtol=1e-5, atol=1e-6
    )


def test_model_without_relu_modules_refused(world) -> None:  # type: ignore[no-untyped-def]
    _, train, _, _ = world

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(144, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(F.relu(x.flatten(1)))

    with pytest.raises(InvalidInputError, match=r"nn\.ReLU"):
        FeatureResponseDetector().fit(Functional(), train)


def test_bad_params_refused(world) -> None:  # type: ignore[no-untyped-def]
    model, train, _, _ = world
    for params in ({"window": 1}, {"direction": "lower"}, {"fuse_with": "odin"}):
        with pytest.raises(ValueError):
            FeatureResponseDetector(**params).fit(model, train)
