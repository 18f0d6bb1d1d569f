"""The post-hoc detectors against pytorch-ood's implementations, on identical features of the tiny
world (penultimate features and logits of its model with a softplus penultimate activation, whose
features have a full-rank covariance; 200 ID test images and 100 noise images).

Equal to float32 rounding wherever both compute the same formula; where they differ, the test
says how and checks the agreement after removing that difference.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from scipy.stats import spearmanr

from pytorch_ood_modules import pytorch_ood_detector
from tiny_world import make_world, trained_world
from tripwire.detectors import create_detector
from tripwire.detectors.feature_detector import FeatureDetector
from tripwire.features import Features, extract_features
from tripwire.metrics import auroc

CLOSE = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    model, train, _ = trained_world(smooth=True)
    fit = extract_features(model, train.batches(256), penultimate=True)
    test = extract_features(model, [images_to_score()], penultimate=True)
    return {
        "model": model,
        "train": train,
        "fit": Features(fit.logits, {}, fit.penultimate, fit.input_shape, train.labels),
        "test": test,
        "labels": train.require_labels(),
    }


def images_to_score() -> torch.Tensor:
    x_id, _ = make_world(200, seed=2)
    return torch.cat([x_id, torch.rand(100, 1, 12, 12, generator=torch.Generator().manual_seed(4))])


def ours(name: str, world: dict[str, Any], **params: Any) -> torch.Tensor:
    det = create_detector(name, **params)
    assert isinstance(det, FeatureDetector)
    det.fit_features(world["model"], world["fit"])
    scores, predicted = det.score_features(world["test"])
    assert torch.equal(predicted, world["test"].predicted)
    return scores


def h(world: dict[str, Any], part: str) -> torch.Tensor:
    return world[part].penultimate


def head(world: dict[str, Any]) -> torch.nn.Linear:
    return world["model"].fc2


def as_maps(features: torch.Tensor) -> torch.Tensor:
    """N×D penultimate features as pytorch-ood's N×D×1×1 feature maps."""
    return features[:, :, None, None]


def test_every_posthoc_detector_separates_the_noise(world) -> None:
    for name in ("knn", "vim", "rmds", "react", "ash-b", "ash-s", "scale", "nnguide", "gen"):
        scores = ours(name, world)
        assert auroc(scores[:200], scores[200:]) > 0.9, name


def test_logit_scores_match(world) -> None:
    logits = world["test"].logits
    theirs = pytorch_ood_detector("maxlogit").MaxLogit.score(logits).double()
    torch.testing.assert_close(ours("maxlogit", world), theirs, **CLOSE)
    # pytorch-ood clips float32 softmax probabilities to [1e-7, 1 − 1e-7] and averages GEN's
    # terms instead of summing them: compare where no probability is clipped.
    p = logits.softmax(dim=1)
    unclipped = ((p > 1e-7) & (p < 1 - 1e-7)).all(dim=1)
    assert unclipped.sum() >= 100
    theirs = pytorch_ood_detector("entropy").Entropy.score(logits).double()
    torch.testing.assert_close(ours("entropy", world)[unclipped], theirs[unclipped], **CLOSE)
    theirs = pytorch_ood_detector("gen").GEN.score(logits).double()
    k = logits.shape[1]
    torch.testing.assert_close(ours("gen", world)[unclipped] / k, theirs[unclipped], **CLOSE)


def test_knn_matches(world) -> None:
    knn = pytorch_ood_detector("knn").KNN(None, k=50).fit_features(h(world, "fit"), world["labels"])
    theirs = knn.predict_features(h(world, "test")).double()
    torch.testing.assert_close(ours("knn", world), theirs, **CLOSE)


def test_vim_matches_up_to_their_float32(world) -> None:
    # pytorch-ood casts to float32; the covariance's eigenvalues span 2e-4 … 6e2 here and α ≈ 158
    # magnifies the float32 residual basis's error (5e-4), so the scores agree to 1e-2 of their
    # mean magnitude (4.4e-3 measured under numpy 2.4.6 and torch 2.13, 1e-3 under earlier
    # versions) and in order. (The float64 transcription of the paper is in
    # test_posthoc_detectors.)
    fc = head(world)
    vim = pytorch_ood_detector("vim").ViM(None, d=8, w=fc.weight.detach(), b=fc.bias.detach())
    vim.fit_features(h(world, "fit"), world["labels"])
    theirs = vim.predict_features(h(world, "test")).double()
    scores = ours("vim", world, dim=8)
    assert (scores - theirs).abs().max() < 1e-2 * scores.abs().mean()
    assert spearmanr(scores.numpy(), theirs.numpy()).statistic > 0.9999


def test_rmds_matches_up_to_their_unnormalised_scatter(world) -> None:
    # pytorch-ood's Σ and Σ₀ are scatter matrices (not divided by N) plus 1e-6·I, so its
    # distances are ours / N. Run in float64: in float32 the inverse of this ill-conditioned
    # covariance (condition ≈ 3e6) loses the small directions.
    torch.set_default_dtype(torch.float64)
    try:
        rmd = pytorch_ood_detector("rmd").RMD(None)
        rmd.fit_features(h(world, "fit").double(), world["labels"])
        theirs = rmd.predict_features(h(world, "test").double())
    finally:
        torch.set_default_dtype(torch.float32)
    n = len(world["labels"])
    torch.testing.assert_close(ours("rmds", world) / n, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("percentile", [90.0, 50.0])
def test_react_matches(world, percentile: float) -> None:
    react = pytorch_ood_detector("react").ReAct(
        backbone=None, head=lambda maps: head(world)(maps.flatten(1)), percentile=percentile / 100
    )
    react.fit_feature_maps(as_maps(h(world, "fit")), world["labels"])
    theirs = react.predict_feature_maps(as_maps(h(world, "test"))).double()
    torch.testing.assert_close(ours("react", world, percentile=percentile), theirs, **CLOSE)


@pytest.mark.parametrize(
    ("name", "variant", "module", "percentile"),
    [
        ("ash-b", "ash-b", "ash", 90.0),
        ("ash-s", "ash-s", "ash", 90.0),
        ("ash-s", "ash-s", "ash", 65.0),
        ("scale", None, "scale", 85.0),
    ],
)
def test_activation_shaping_matches(world, name, variant, module, percentile) -> None:
    kwargs = {} if variant is None else {"variant": variant}
    klass = "ASH" if module == "ash" else "SCALE"
    detector = getattr(pytorch_ood_detector(module), klass)(
        backbone=None,
        head=lambda maps: head(world)(maps.flatten(1)),
        percentile=percentile / 100,
        **kwargs,
    )
    theirs = detector.predict_feature_maps(as_maps(h(world, "test"))).double()
    torch.testing.assert_close(ours(name, world, percentile=percentile), theirs, **CLOSE)


def test_fdbd_matches(world) -> None:
    fdbd = pytorch_ood_detector("fdbd").fDBD(None, head(world)).fit_features(h(world, "fit"))
    theirs = fdbd.predict_features(h(world, "test")).double()
    torch.testing.assert_close(ours("fdbd", world), theirs, **CLOSE)


def test_nnguide_matches(world) -> None:
    nnguide = pytorch_ood_detector("nnguide").NNGuide(None, head(world), k=10)
    nnguide.fit_features(h(world, "fit"), world["labels"])
    theirs = nnguide.predict_features(h(world, "test")).double()
    torch.testing.assert_close(ours("nnguide", world), theirs, **CLOSE)


def test_fit_and_score_equal_the_shared_feature_path(world) -> None:
    model, train, x = world["model"], world["train"], images_to_score()
    for name in (
        "knn",
        "vim",
        "rmds",
        "react",
        "ash-b",
        "ash-s",
        "scale",
        "fdbd",
        "nnguide",
        "msp",
    ):
        direct = create_detector(name).fit(model, train).score(model, x, batch_size=64)
        torch.testing.assert_close(direct, ours(name, world), rtol=1e-6, atol=1e-6)


def test_gram_matches_with_our_bounds(world) -> None:
    # pytorch-ood's Gram splits its held-out part per class with an unseeded permutation, so the
    # bounds are ours, given to it; the statistics, deviations and their sum are then its own.
    model, train = world["model"], world["train"]
    det = create_detector("gram", layers=["relu1", "relu2"], orders=[1, 2, 3]).fit(model, train)
    blocks = [
        torch.nn.Sequential(model.conv1, model.relu1),
        torch.nn.Sequential(model.pool1, model.conv2, model.relu2),
    ]
    rest = torch.nn.Sequential(model.flatten, model.fc1, model.relu3, model.fc2)
    gram = pytorch_ood_detector("gram").Gram(rest, blocks, num_classes=3, num_poles_list=[1, 2, 3])
    gram.feature_min = [[low[:, i].float() for i in range(3)] for low in det.bounds_.low]
    gram.feature_max = [[high[:, i].float() for i in range(3)] for high in det.bounds_.high]
    gram.layer_norm = det.bounds_.expected.float()
    x = images_to_score()
    theirs = gram.predict(x).double()
    torch.testing.assert_close(det.score(model, x), theirs, rtol=1e-4, atol=1e-4)
    assert auroc(theirs[:200], theirs[200:]) > 0.9
