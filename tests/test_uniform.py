"""The uniform detector: torch scoring equals scikit-learn, the formula, layer choice, Guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from tiny_world import trained_world, with_a_rare_class
from tripwire.data.base import ImageSet
from tripwire.detectors import UniformDetector
from tripwire.detectors.ocsvm import ClassConditionalOCSVM
from tripwire.detectors.proxies import PROXIES, make_proxies
from tripwire.detectors.uniform import _per_class_min_max, transductive_scores


def test_torch_ocsvm_equals_sklearn_score_samples() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (300, 5)), rng.normal(3, 2, (200, 5))])
    c = np.array([0] * 300 + [1] * 200)
    bank = ClassConditionalOCSVM.fit(torch.tensor(x), torch.tensor(c), 2, nu=0.1)
    test = rng.normal(1, 2, (50, 5))
    which = rng.integers(0, 2, 50)  # each test row scored under the SVM of a random class
    expected = np.zeros(50)
    for k in (0, 1):
        scaler = StandardScaler().fit(x[c == k])
        svm = OneClassSVM(nu=0.1, gamma="scale").fit(scaler.transform(x[c == k]))
        expected[which == k] = -svm.score_samples(scaler.transform(test[which == k]))
    got = bank.score(torch.tensor(test, dtype=torch.float32), torch.tensor(which))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_concatenated_banks_score_like_each_bank_on_mixed_classes() -> None:
    g = torch.Generator().manual_seed(0)
    x5, c5 = torch.randn(120, 5, generator=g), torch.arange(120) % 3
    x3, c3 = torch.randn(90, 3, generator=g) * 2 + 1, torch.arange(90) % 3
    wide, narrow = ClassConditionalOCSVM.fit(x5, c5, 3), ClassConditionalOCSVM.fit(x3, c3, 3)
    assert wide.support.shape[1] != narrow.support.shape[1]  # S differs: padding is exercised
    both = ClassConditionalOCSVM.concat([wide, narrow])
    q5, q3 = torch.randn(40, 5, generator=g), torch.randn(40, 3, generator=g)
    cls = torch.randint(0, 3, (40,), generator=g)  # unsorted, uneven classes
    features = torch.cat([q5, torch.nn.functional.pad(q3, (0, 2))])
    for log in (False, True):
        got = both.score(features, torch.cat([cls, cls + 3]), log)
        torch.testing.assert_close(got[:40], wide.score(q5, cls, log))
        torch.testing.assert_close(got[40:], narrow.score(q3, cls, log))


def test_class_with_too_few_samples_is_left_unfitted() -> None:
    x = torch.randn(30, 3)
    c = torch.tensor([0] * 28 + [1] * 2)
    bank = ClassConditionalOCSVM.fit(x, c, 3)
    assert bank.fitted.tolist() == [True, False, False]
    unfitted = torch.full((30,), 2)
    for log in (False, True):
        top = bank.score(x, unfitted, log)
        assert torch.isfinite(top).all()
        assert (top >= bank.score(x, torch.zeros(30, dtype=torch.long), log).max()).all()


def test_inputs_of_a_class_too_rare_to_fit_score_as_the_least_typical_id_input() -> None:
    model, train, val = trained_world()
    fit_set = with_a_rare_class(model, train, rare=2)  # 4 images < 5: class 2 unfitted
    det = UniformDetector(layer="relu1", holdout_fraction=0.2).fit(model, fit_set)
    assert det.svm_logit_.fitted.tolist() == [True, True, False]
    scores, predicted = det.score_and_predict(model, val)
    # min–max constants of the fitted classes: f = 0 maps to ≥ 1 in each bank (it mapped to 0)
    assert bool((predicted == 2).any()) and float(scores[predicted == 2].min()) >= 1.0


def test_min_max_constants_of_an_unfitted_class_are_the_fitted_classes() -> None:
    raw = torch.tensor([[-3.0, -2.0], [-1.0, -1.5], [-2.0, -4.0], [0.0, 0.0], [0.0, 0.0]])
    pred = torch.tensor([0, 0, 1, 2, 2])  # class 2 unfitted: its raw scores are the maximum, 0
    low, high = _per_class_min_max(raw, pred, 3, torch.tensor([True, True, False]))
    torch.testing.assert_close(low[2], torch.tensor([-3.0, -4.0]))
    torch.testing.assert_close(high[2], torch.tensor([-1.0, -1.5]))
    normed = (raw[3] - low[2]) / (high[2] - low[2])
    assert bool((normed > 1).all())  # as anomalous as the least typical fitted input, or more


def test_proxies_stay_in_range_and_are_seeded() -> None:
    x = torch.rand(8, 1, 12, 12)
    a, b = make_proxies(x, seed=3), make_proxies(x, seed=3)
    assert set(a) == set(PROXIES)
    for name in a:
        assert a[name].shape == x.shape and a[name].min() >= 0 and a[name].max() <= 1
        assert torch.equal(a[name], b[name])
        assert not torch.equal(a[name], x)
    # pixel-shuffle keeps each image's intensity histogram
    torch.testing.assert_close(
        a["pixel-shuffle"].flatten(1).sort().values, x.flatten(1).sort().values
    )


@pytest.fixture(scope="module")
def lenet_detector(lenet_mnist, mnist_train):
    fit_set, val = mnist_train.take(12_000, seed=0).split(0.2, seed=0)
    det = UniformDetector().fit(lenet_mnist, fit_set)
    det.calibrate(lenet_mnist, val)
    return det


@pytest.mark.slow
def test_score_is_the_papers_formula(lenet_detector, lenet_mnist, mnist_test) -> None:
    det = lenet_detector
    x = mnist_test.as_float(slice(0, 64))
    raw, pred = det.raw_scores(lenet_mnist, x)
    normed = (raw - det.low_[pred]) / (det.high_[pred] - det.low_[pred])
    expected = 0.5 * normed[:, 0] + 0.5 * normed[:, 1]
    torch.testing.assert_close(det.score(lenet_mnist, x), expected.double(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_layer_choice_is_reported_and_early(lenet_detector) -> None:
    choice = lenet_detector.layer_choice_
    assert choice is not None and choice.layer == lenet_detector.layer_
    assert lenet_detector.fit_summary() == {"layer": choice.layer}  # what bench reports show
    assert set(choice.per_set[choice.layer]) == set(PROXIES)
    assert choice.criterion[choice.layer] == max(choice.criterion.values())
    assert choice.layer.startswith(("conv", "relu", "pool"))  # an early conv block, as the paper


@pytest.mark.slow
def test_lenet_detects_noise_and_keeps_id(lenet_detector, lenet_mnist, mnist_test) -> None:
    from tripwire import metrics

    g = torch.Generator().manual_seed(0)
    noise = torch.rand(500, 1, 28, 28, generator=g)
    s_id = lenet_detector.score(lenet_mnist, mnist_test.take(2000))
    assert metrics.auroc(s_id, lenet_detector.score(lenet_mnist, noise)) > 0.99
    flagged = lenet_detector.predict(lenet_mnist, mnist_test.take(2000, seed=1)).float().mean()
    assert 0.02 < flagged < 0.09  # thresholds from a held-out split accept about 95 %


@pytest.mark.slow
def test_transductive_variant_differs_only_in_normalisation(
    lenet_detector, lenet_mnist, mnist_test
):
    x = torch.cat([mnist_test.as_float(slice(0, 200)), torch.rand(100, 1, 28, 28)])
    raw, pred = lenet_detector.raw_scores(lenet_mnist, x)
    s = transductive_scores(lenet_detector, raw, pred)
    assert s.shape == (300,) and s.min() >= 0 and s.max() <= 1 + 1e-6


def test_median_criterion_is_not_decided_by_one_proxy() -> None:
    from tripwire.detectors.mdl import rank_layers

    # the proxies' AUROCs measured on VGG-16 (training seed 2) for its two best layers
    per_set = {
        "conv3_2": {"pixel": 1.0, "tile": 0.906, "sign": 1.0, "mixup": 0.579, "smooth": 0.997},
        "relu5_2": {"pixel": 0.878, "tile": 0.929, "sign": 0.971, "mixup": 0.772, "smooth": 0.974},
    }
    by_mean = rank_layers(per_set, "mean")
    assert by_mean.layer == "relu5_2" and by_mean.criterion["relu5_2"] == pytest.approx(0.9048)
    by_median = rank_layers(per_set, "median")
    assert by_median.layer == "conv3_2" and by_median.criterion == {
        "conv3_2": 0.997,
        "relu5_2": 0.929,
    }
    tied = {"early": {"a": 0.950}, "late": {"a": 0.954}}
    assert rank_layers(tied, "median").layer == "early"  # within TIE: the earlier layer


def test_explicit_validation_anomalies_drive_layer_choice() -> None:
    from tiny_world import SHAPE, trained_world

    model, train, _ = trained_world()
    g = torch.Generator().manual_seed(0)
    given = ImageSet("val-anomalies", torch.rand(100, *SHAPE, generator=g))
    det = UniformDetector(layer="auto").fit(model, train, anomalies=given)
    assert det.layer_choice_ is not None
    assert all(set(v) == {"given"} for v in det.layer_choice_.per_set.values())
    fixed = UniformDetector(layer="conv1").fit(model, train)
    assert fixed.layer_ == "conv1" and fixed.layer_choice_ is None
