"""uniform-plus: its confidence terms, its fused score formula, and its parameter checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tiny_world import train_on_world, trained_world, with_a_rare_class
from tripwire.data.base import ImageSet
from tripwire.detectors import Detector, UniformPlusDetector, create_detector
from tripwire.detectors.uniform_plus import GRAM_CAP, neg_log_max_softmax, neg_logit_margin


def test_confidence_terms_match_their_formulas() -> None:
    logits = torch.randn(50, 10, generator=torch.Generator().manual_seed(0)) * 3
    expected = torch.logsumexp(logits, 1) - logits.amax(1)
    torch.testing.assert_close(neg_log_max_softmax(logits), expected)
    torch.testing.assert_close(neg_logit_margin(logits), logits.mean(1) - logits.amax(1))
    # very confident: the plain difference cancels to 0, the log1p form keeps the tiny value
    confident = torch.tensor([[60.0, 0.0, 0.0]])
    assert float(neg_log_max_softmax(confident)) == pytest.approx(
        2 * torch.exp(torch.tensor(-60.0)).item(), rel=1e-4
    )


@pytest.mark.slow
def test_score_is_the_sum_of_the_standardised_components(
    lenet_mnist, mnist_train, mnist_test
) -> None:
    det = UniformPlusDetector(layer="pool1", seed=0).fit(
        lenet_mnist, mnist_train.take(3000, seed=0)
    )
    assert det.pooling == "meanstd" and det.extras == ("msp", "margin") and det.fusion == "sum"
    x = mnist_test.as_float(slice(0, 64))
    raw, pred = det.raw_scores(lenet_mnist, x)
    with torch.no_grad():
        logits = lenet_mnist(x)
    torch.testing.assert_close(
        raw[:, 2], torch.logsumexp(logits, 1) - logits.amax(1), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(raw[:, 3], logits.mean(1) - logits.amax(1))
    z = (raw - det.center_[pred]) / det.scale_[pred]
    expected = z.sum(dim=1)
    torch.testing.assert_close(det.score(lenet_mnist, x), expected.double(), rtol=1e-5, atol=1e-6)
    # the scale is the `tail` quantile's distance from the median: z = 1 at that ID quantile
    assert bool((det.scale_ > 0).all())


@pytest.mark.parametrize(
    "params",
    [{"extras": ("msp", "entropy")}, {"extras": ("msp", "msp")}, {"fusion": "mean"}, {"tail": 1.0}],
)
def test_bad_parameters_are_refused(params, lenet_mnist, mnist_train) -> None:
    with pytest.raises(ValueError):
        UniformPlusDetector(**params).fit(lenet_mnist, mnist_train.take(200, seed=0))


def test_inputs_of_a_class_too_rare_to_fit_score_highest_and_finite() -> None:
    model, train, val = trained_world()
    fit_set = with_a_rare_class(model, train, rare=2)  # 4 images < 5: class 2 unfitted
    det = UniformPlusDetector(layer="relu1", holdout_fraction=0.2).fit(model, fit_set)
    assert det.svm_mdl_.fitted.tolist() == [True, True, False]
    scores, predicted = det.score_and_predict(model, val)
    assert bool(torch.isfinite(scores).all())
    assert bool((predicted == 2).any())
    assert float(scores[predicted == 2].min()) > float(scores[predicted != 2].max())
    # calibrated on a set with many of them, their class still gets the others' threshold
    flagged = det.calibrate(model, val).flag(scores, predicted)
    assert bool(flagged[predicted == 2].all())
    assert float(flagged[predicted != 2].double().mean()) < 0.2


def test_calibrate_takes_the_normalisation_constants_from_the_calibration_images() -> None:
    model, train, val = trained_world()
    det = UniformPlusDetector(layer="relu1", holdout_fraction=0.2).fit(model, train)
    center_at_fit, scale_at_fit = det.center_.clone(), det.scale_.clone()
    det.calibrate(model, val)
    assert not torch.equal(det.center_, center_at_fit)
    assert not torch.equal(det.scale_, scale_at_fit)
    center, scale, thresholds = det.center_.clone(), det.scale_.clone(), det.thresholds_.clone()
    # a fixed (seeded) halving: calibrating again on the same images changes nothing
    det.calibrate(model, val)
    assert torch.equal(det.center_, center) and torch.equal(det.scale_, scale)
    assert torch.equal(det.thresholds_, thresholds)
    # too few images to halve (< 40 a class): the fit's constants stay, all set the thresholds
    small = UniformPlusDetector(layer="relu1", holdout_fraction=0.2).fit(model, train)
    small.calibrate(model, val.take(30, seed=0))
    assert torch.equal(small.center_, center_at_fit) and torch.equal(small.scale_, scale_at_fit)


def test_feature_views_equal_the_standalone_detectors_and_sum_plus_is_one_sided(
    tmp_path,
) -> None:
    model, train, val = trained_world()
    extras = ("msp", "margin", "vim", "knn", "gram")
    det = UniformPlusDetector(layer="relu1", extras=extras, fusion="sum+", holdout_fraction=0.2)
    det.fit(model, train).calibrate(model, val)
    raw, pred = det.raw_scores_of(model, val)
    # the views are the ViM and KNN detectors' scores, fitted on the same (fit-part) images
    fit_part, _ = train.split(0.2, seed=0)
    vim = create_detector("vim").fit(model, fit_part)
    knn = create_detector("knn", k=50).fit(model, fit_part)
    torch.testing.assert_close(raw[:, 4].double(), vim.score(model, val), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(raw[:, 5].double(), knn.score(model, val), rtol=1e-5, atol=1e-6)
    # the Gram view is the Gram detector's on the deepest maps at order 1, same split and seed
    gram = create_detector("gram", layers="deepest", orders=[1], holdout_fraction=0.2)
    gram.fit(model, train)
    assert det.gram_layers_ == gram.layers_
    torch.testing.assert_close(raw[:, 6].double(), gram.score(model, val), rtol=1e-5, atol=1e-6)
    # sum+: only the views that find an input atypical (z > 0) add to its score, the Gram view
    # at most GRAM_CAP
    z = (raw - det.center_[pred]) / det.scale_[pred]
    z[:, 6] = z[:, 6].clamp(max=GRAM_CAP)
    expected = z.clamp_min(0).sum(dim=1).double()
    torch.testing.assert_close(det.score(model, val), expected, rtol=1e-5, atol=1e-6)
    assert float(z.min()) < 0  # there are typical views, and they did not subtract
    far = raw[:1].clone()
    far[:, 6] = det.center_[pred[0], 6] + 1000 * det.scale_[pred[0], 6]  # z = 1000
    capped = det._combine(far, pred[:1]) - det._combine(raw[:1], pred[:1])
    assert float(capped) == pytest.approx(GRAM_CAP - float(z[0, 6].clamp_min(0)), rel=1e-4)
    det.save(tmp_path / "det")
    loaded = Detector.load(tmp_path / "det")
    assert torch.equal(loaded.score(model, val), det.score(model, val))


def test_the_gram_view_of_a_model_without_feature_maps_adds_nothing_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(144, 32), nn.ReLU(), nn.Linear(32, 3))
    x, y = train_on_world(mlp, 300, 40)
    train, val = ImageSet("world", x[:250], y[:250]), ImageSet("world", x[250:], y[250:])
    extras = ("msp", "margin", "vim", "gram")
    with caplog.at_level("WARNING"):
        det = UniformPlusDetector(extras=extras, fusion="sum+").fit(mlp, train)
    assert "gram view reads nothing" in caplog.text and det.fit_summary()["gram view"] == "0 layers"
    raw, _ = det.raw_scores_of(mlp, val)
    assert bool((raw[:, 5] == 0).all())
    plain = UniformPlusDetector(extras=extras[:3], fusion="sum+").fit(mlp, train)
    torch.testing.assert_close(det.score(mlp, val), plain.score(mlp, val))
