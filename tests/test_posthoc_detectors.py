"""The post-hoc detectors on penultimate features and logits (KNN, ViM, MaxLogit, Entropy, GEN)
against independent reference computations (scikit-learn, NumPy, SciPy), and the head lookup."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import entropy as scipy_entropy
from sklearn.covariance import EmpiricalCovariance
from sklearn.neighbors import NearestNeighbors
from torch import nn

from tiny_world import trained_world
from tripwire.detectors import create_detector
from tripwire.errors import InvalidInputError
from tripwire.features import extract_features
from tripwire.head import classifier_head


@pytest.fixture(scope="module")
def world():
    model, train, val = trained_world()
    h_train = penultimate_features(model, train)[0]
    h_val, logits_val = penultimate_features(model, val)
    return model, train, val, h_train.double().numpy(), h_val.double().numpy(), logits_val


def penultimate_features(model, images):
    f = extract_features(model, images.batches(256), penultimate=True)
    return f.penultimate, f.logits


def test_penultimate_features_are_the_input_of_the_last_linear(world) -> None:
    model, _, val, _, h_val, logits_val = world
    with torch.no_grad():
        expected = model.relu3(
            model.fc1(
                model.flatten(
                    model.relu2(model.conv2(model.pool1(model.relu1(model.conv1(val.as_float())))))
                )
            )
        )
    np.testing.assert_allclose(h_val, expected.double().numpy(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits_val, model(val.as_float()).detach())  # fmt: skip


def test_knn_is_the_kth_neighbour_distance_of_normalised_features(world) -> None:
    model, train, val, h_train, h_val, _ = world
    det = create_detector("knn", k=7).fit(model, train)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    nn_index = NearestNeighbors(n_neighbors=7).fit(unit(h_train))
    expected = nn_index.kneighbors(unit(h_val))[0][:, -1]
    np.testing.assert_allclose(det.score(model, val).numpy(), expected, rtol=1e-4, atol=1e-6)
    # a sampled bank: bank_size images (seeded), and no fewer than k
    small = create_detector("knn", k=7, bank_size=100, seed=3).fit(model, train)
    assert small.bank_.shape == (100, h_train.shape[1])
    with pytest.raises(ValueError, match="bank_size"):
        create_detector("knn", k=7, bank_size=5).fit(model, train)


def test_vim_matches_the_papers_formula(world) -> None:
    model, train, val, h_train, h_val, logits_val = world
    det = create_detector("vim", dim=6).fit(model, train)
    w = model.fc2.weight.detach().double().numpy()
    b = model.fc2.bias.detach().double().numpy()
    u = -np.linalg.pinv(w) @ b
    cov = EmpiricalCovariance(assume_centered=True).fit(h_train - u)
    eig_vals, eig_vecs = np.linalg.eig(cov.covariance_)
    residual = np.ascontiguousarray(eig_vecs.T[np.argsort(eig_vals * -1)[6:]].T)
    train_logits = penultimate_features(model, train)[1].double().numpy()
    v_train = np.linalg.norm((h_train - u) @ residual, axis=-1)
    alpha = train_logits.max(axis=-1).mean() / v_train.mean()
    v_val = np.linalg.norm((h_val - u) @ residual, axis=-1) * alpha
    energy = torch.logsumexp(logits_val.double(), dim=1).numpy()
    np.testing.assert_allclose(det.score(model, val).numpy(), v_val - energy, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="dim"):
        create_detector("vim", dim=16).fit(model, train)  # the features are 16 wide


def test_logit_scores_match_their_formulas(world) -> None:
    model, train, val, _, _, logits_val = world
    p = torch.softmax(logits_val.double(), dim=1).numpy()
    maxlogit = create_detector("maxlogit").fit(model, train).score(model, val)
    np.testing.assert_allclose(maxlogit.numpy(), -logits_val.double().amax(1).numpy(), rtol=1e-6)
    ent = create_detector("entropy").fit(model, train).score(model, val)
    np.testing.assert_allclose(ent.numpy(), scipy_entropy(p, axis=1), rtol=1e-6, atol=1e-12)
    gen = create_detector("gen", gamma=0.1, top=2).fit(model, train).score(model, val)
    top2 = -np.sort(-p, axis=1)[:, :2]
    np.testing.assert_allclose(gen.numpy(), (top2**0.1 * (1 - top2) ** 0.1).sum(1), rtol=1e-6)


def test_models_without_a_usable_head_are_refused(world) -> None:
    model, train, *_ = world
    with pytest.raises(InvalidInputError, match=r"no nn\.Linear.*layers: 0, 1"):
        classifier_head(nn.Sequential(nn.Conv2d(1, 3, 12), nn.Flatten()))
    headless = nn.Sequential(nn.Conv2d(1, 3, 12), nn.Flatten())
    for name in ("knn", "vim", "rmds", "react", "ash-b", "ash-s", "scale", "fdbd", "nnguide"):
        with pytest.raises(InvalidInputError, match=r"no nn\.Linear"):
            create_detector(name).fit(headless, train)
    with pytest.raises(InvalidInputError, match=r"unknown layer.*available: 0"):
        create_detector("gram", layers=["fc"]).fit(headless, train)

    class Scaled(nn.Module):  # the output is not the last linear layer's
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2.0 * self.net(x)

    for name in ("knn", "vim", "rmds", "react", "fdbd", "nnguide"):
        with pytest.raises(InvalidInputError, match=r"not that of its last nn\.Linear"):
            create_detector(name).fit(Scaled(), train)


def test_gram_on_the_deepest_maps_is_gram_on_those_layers(world, tmp_path) -> None:
    """relu1 gives 4×12×12 maps, relu2 8×6×6, relu3 dense: "deepest" keeps relu2 alone."""
    model, train, *_ = world
    x = torch.rand(20, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    deepest = create_detector("gram", layers="deepest", orders=[1]).fit(model, train)
    named = create_detector("gram", layers=["relu2"], orders=[1]).fit(model, train)
    assert deepest.layers_ == ["relu2"]
    torch.testing.assert_close(deepest.score(model, x), named.score(model, x))
    deepest.save(tmp_path / "g")
    torch.testing.assert_close(
        type(deepest).load(tmp_path / "g").score(model, x), deepest.score(model, x)
    )
    with pytest.raises(ValueError, match=r"layers.*'deepest'"):
        create_detector("gram", layers="shallowest")
