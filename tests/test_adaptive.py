"""Adaptive PGD against a classifier and its detector (`tripwire.anomalies.adaptive`)."""

from __future__ import annotations

import functools

import pytest
import torch

from tiny_world import CONTRACT_PARAMS, contract_world, fit_on_world, make_world
from tripwire.anomalies.adaptive import NotDifferentiableError, adaptive_pgd
from tripwire.detectors import Detector, create_detector
from tripwire.errors import InvalidInputError, NotFittedError


@functools.cache
def _calibrated(name: str) -> Detector:
    world = contract_world()
    det = fit_on_world(create_detector(name, **CONTRACT_PARAMS.get(name, {})), world)
    return det.calibrate(world["model"], world["val"])


def _inputs(n: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    return make_world(n, seed=5)


def test_result_is_consistent_and_stays_in_the_ball() -> None:
    model, det = contract_world()["model"], _calibrated("knn")
    x, y = _inputs()
    r = adaptive_pgd(model, det, x, y, eps=0.2, step=0.02, steps=15)
    assert torch.equal(r.success, r.misclassified & ~r.flagged)
    assert torch.equal(r.first_success > 0, r.success)  # kept at its first success
    assert (r.images - x).abs().max() <= 0.2 + 1e-6
    assert r.images.min() >= 0 and r.images.max() <= 1
    curve = [r.success_after(t) for t in range(16)]
    assert curve[0] == 0 and curve == sorted(curve)
    assert curve[-1] == pytest.approx(r.success.double().mean().item())
    with torch.no_grad():  # the flags are the guard's own on the returned images
        scores, pred = det.score_and_predict(model, r.images)
    assert torch.equal(det.flag(scores, pred), r.flagged)


def test_oblivious_attack_misclassifies_nearly_everything() -> None:
    model, det = contract_world()["model"], _calibrated("msp")
    x, y = _inputs()
    r = adaptive_pgd(model, det, x, y, eps=0.3, step=0.03, steps=20, against_detector=False)
    assert r.misclassified.double().mean() > 0.95


def test_white_box_attacker_evades_the_detector_more_than_the_oblivious_one() -> None:
    model, det = contract_world()["model"], _calibrated("knn")
    x, y = _inputs()
    kw = {"eps": 0.3, "step": 0.03, "steps": 20}
    oblivious = adaptive_pgd(model, det, x, y, against_detector=False, **kw)
    white_box = adaptive_pgd(model, det, x, y, **kw)
    assert white_box.success.double().mean() > oblivious.success.double().mean() + 0.1


def test_default_detector_scores_are_differentiable_and_unchanged_by_autograd() -> None:
    model, det = contract_world()["model"], _calibrated("uniform-fusion")
    x, _ = _inputs(20)
    with torch.no_grad():
        plain, _ = det._score_batch(model, x)
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        scores, _ = det._score_batch(model, xg)
        (grad,) = torch.autograd.grad(scores.sum(), xg)
    torch.testing.assert_close(scores.detach(), plain, rtol=1e-6, atol=1e-9)
    assert grad.isfinite().all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["odin", "lid", "kd_bu", "gram"])
def test_detector_without_a_gradient_path_is_refused(name: str) -> None:
    model, det = contract_world()["model"], _calibrated(name)
    x, y = _inputs(8)
    with pytest.raises(NotDifferentiableError, match="BPDA"):
        adaptive_pgd(model, det, x, y, eps=0.1, step=0.01, steps=2)


def test_bad_settings_and_uncalibrated_detectors_are_refused() -> None:
    world = contract_world()
    x, y = _inputs(8)
    with pytest.raises(InvalidInputError):
        adaptive_pgd(world["model"], _calibrated("msp"), x, y, eps=0.0, step=0.01, steps=2)
    uncalibrated = fit_on_world(create_detector("msp"), world)
    with pytest.raises(NotFittedError, match="thresholds"):
        adaptive_pgd(world["model"], uncalibrated, x, y, eps=0.1, step=0.01, steps=2)


def test_l2_attack_stays_in_its_ball() -> None:
    model, det = contract_world()["model"], _calibrated("msp")
    x, y = _inputs(20)
    r = adaptive_pgd(model, det, x, y, norm="l2", eps=1.5, step=0.3, steps=10)
    assert (r.images - x).flatten(1).norm(dim=1).max() <= 1.5 + 1e-5
    assert r.misclassified.any()
