"""The baseline detectors against closed-form or hand-computed cases on tiny data.

MSP, Energy, ODIN (ε = 0 and the perturbation's direction), Mahalanobis (vs numpy), ELO (vs
scikit-learn's OneClassSVM), KD (vs a direct kernel sum and scikit-learn's KernelDensity), BU
(vs masks applied by hand), LID (hand-computed MLE; points of known intrinsic dimension), and the
fused KD+BU / LID detectors on FGSM of the tiny world.
"""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from sklearn.covariance import OAS, EmpiricalCovariance, LedoitWolf
from sklearn.neighbors import KernelDensity
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM
from torch import nn

from tiny_world import make_world, trained_world
from tripwire import metrics
from tripwire.data.base import ImageSet
from tripwire.detectors import create_detector
from tripwire.detectors import kd_bu as kd_bu_module
from tripwire.detectors._baselines import LogisticFusion
from tripwire.detectors.kd_bu import KDBUDetector, log_kernel_density
from tripwire.detectors.lid import LIDDetector, default_layers, lid_mle
from tripwire.detectors.mahalanobis import MahalanobisDetector, min_mahalanobis, tied_gaussian
from tripwire.detectors.odin import ODINDetector, odin_perturb
from tripwire.errors import InvalidInputError
from tripwire.features import extract_features


@pytest.fixture(scope="module")
def world():
    model, train, val = trained_world()
    x_test, y_test = make_world(300, seed=2)
    return model, train, val, x_test, y_test


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 0.3) -> torch.Tensor:
    """x + ε·sign(∇ₓ CE), clipped — a minimal FGSM for the tiny world."""
    xg = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(xg), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, xg)
    return (x + eps * g.sign()).clamp(0, 1).detach()


def linear_model(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(144, 3))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(3, 144, generator=g) * 0.3)
        net[1].bias.copy_(torch.randn(3, generator=g))
    return net.eval()


# ---------------------------------------------------------------------------- MSP, Energy, ODIN
def test_msp_is_one_minus_max_softmax(world) -> None:
    model, train, _, x, _ = world
    det = create_detector("msp").fit(model, train)
    logits = model(x).detach().double().numpy()
    expected = 1 - softmax(logits, axis=1).max(axis=1)
    np.testing.assert_allclose(det.score(model, x).numpy(), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_energy_is_minus_t_logsumexp(world, temperature: float) -> None:
    model, train, _, x, _ = world
    det = create_detector("energy", temperature=temperature).fit(model, train)
    logits = model(x).detach().double().numpy()
    expected = -temperature * logsumexp(logits / temperature, axis=1)
    np.testing.assert_allclose(det.score(model, x).numpy(), expected, rtol=1e-6)


def test_odin_eps0_is_temperature_scaled_msp(world) -> None:
    model, train, _, x, _ = world
    det = ODINDetector(epsilon=0.0, temperature=1000.0).fit(model, train)
    logits = model(x).detach().double().numpy()
    expected = 1 - softmax(logits / 1000.0, axis=1).max(axis=1)
    np.testing.assert_allclose(det.score(model, x).numpy(), expected, rtol=1e-9, atol=1e-12)


def test_odin_perturbation_follows_the_closed_form_gradient() -> None:
    # For logits Wx + b, ∇ₓ log S_ŷ(x; T) = (W_ŷ − Σ_c p_c W_c) / T with p = softmax(f(x)/T).
    net = linear_model()
    x = torch.rand(16, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    t, eps = 10.0, 0.01
    x_tilde, pred = odin_perturb(net, x, t, eps)
    w = net[1].weight.detach().double()
    p = torch.softmax(net(x).detach().double() / t, dim=1)
    grad = (w[pred] - p @ w) / t
    expected = (x.flatten(1).double() + eps * grad.sign()).clamp(0, 1)
    torch.testing.assert_close(x_tilde.flatten(1).double(), expected)
    assert all(p.grad is None for p in net.parameters())


def test_odin_perturbation_raises_id_confidence(world) -> None:
    model, train, _, x, _ = world
    s0 = ODINDetector(epsilon=0.0).fit(model, train).score(model, x)
    s1 = ODINDetector(epsilon=0.005).fit(model, train).score(model, x)
    assert float(s1.mean()) < float(s0.mean())


@pytest.mark.parametrize("selection", ["validation", "id-only"])
def test_odin_chooses_epsilon_from_the_grid(world, selection: str) -> None:
    model, train, _, _, _ = world
    grid = (0.0, 0.002, 0.01)
    det = ODINDetector(epsilons=grid, selection=selection, validation_size=100).fit(model, train)
    assert det.epsilon_ in grid
    assert set(det.criterion_) == {repr(e) for e in grid}
    best = max(det.criterion_.values())
    assert det.criterion_[repr(det.epsilon_)] >= best - 1e-3
    assert det.fit_summary() == {"epsilon": f"{det.epsilon_:g}"}  # shown in bench reports


def test_odin_uses_given_validation_anomalies(world) -> None:
    model, train, _, _, _ = world
    anomalies = torch.rand(100, 1, 12, 12, generator=torch.Generator().manual_seed(5))
    det = ODINDetector(epsilons=(0.0, 0.002), validation_size=100)
    det.fit(model, train, anomalies=anomalies)
    assert det.epsilon_ in (0.0, 0.002) and len(det.criterion_) == 2


# ---------------------------------------------------------------------------- Mahalanobis
@pytest.mark.parametrize(
    "shrinkage, estimator",
    [("ledoit-wolf", LedoitWolf), ("oas", OAS), ("none", EmpiricalCovariance)],
)
def test_mahalanobis_equals_numpy(world, shrinkage: str, estimator) -> None:
    model, train, _, x, _ = world
    det = MahalanobisDetector(shrinkage=shrinkage).fit(model, train)
    z = model(train.as_float()).detach().double().numpy()
    y = train.labels.numpy()
    means = np.stack([z[y == c].mean(axis=0) for c in range(3)])
    cov = estimator(assume_centered=True).fit(z - means[y]).covariance_
    prec = np.linalg.inv(cov)
    zt = model(x).detach().double().numpy()
    d2 = np.stack([np.einsum("nd,de,ne->n", zt - m, prec, zt - m) for m in means], axis=1)
    np.testing.assert_allclose(det.score(model, x).numpy(), d2.min(axis=1), rtol=1e-5)


def test_mahalanobis_shrinkage_scales_with_the_data(world) -> None:
    # Ledoit–Wolf shrinks less as samples grow: the covariance of more data is closer to the
    # empirical one.
    model, train, _, _, _ = world
    z = extract_features(model, [train.as_float()], ["relu3"]).layers["relu3"].double().numpy()
    few = LedoitWolf().fit(z[:40]).shrinkage_
    many = LedoitWolf().fit(z).shrinkage_
    assert many < few
    det = MahalanobisDetector(layers=("relu3",)).fit(model, train)
    assert det.chol_[0].shape == (16, 16) and torch.isfinite(det.chol_[0]).all()


def test_mahalanobis_ignores_a_unit_that_never_fires() -> None:
    """A singular ML covariance (a dead unit) is pseudo-inverted: the distance is the one over
    the units that vary, not an error."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(300, 3, generator=g, dtype=torch.float64)
    z[:, 2] = 0.0
    labels = torch.randint(0, 2, (300,), generator=g)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    with_dead_unit = min_mahalanobis(x, *tied_gaussian(z, labels, 2))
    without = min_mahalanobis(x[:, :2], *tied_gaussian(z[:, :2], labels, 2))
    torch.testing.assert_close(with_dead_unit, without)


def test_mahalanobis_ensemble_sum_of_standardised_layers(world) -> None:
    model, train, _, x, _ = world
    det = MahalanobisDetector(layers=("relu1", "relu3", "logits"), validation_size=200)
    det.fit(model, train)
    assert det.combine_ == "sum"
    per_layer, _ = det.layer_scores(model, x)
    singles = [MahalanobisDetector(layers=(n,)).fit(model, train) for n in det.layers_]
    for i, single in enumerate(singles):
        torch.testing.assert_close(per_layer[:, i], single.score(model, x))
    expected = ((per_layer - det.layer_mean_) / det.layer_std_).sum(dim=1)
    torch.testing.assert_close(det.score(model, x), expected)


def test_mahalanobis_ensemble_logistic_with_given_anomalies(world) -> None:
    model, train, _, x, y = world
    adv = fgsm(model, train.as_float(), train.labels)
    det = MahalanobisDetector(layers=("relu1", "logits"), validation_size=300)
    det.fit(model, train, anomalies=adv)
    assert det.combine_ == "logistic" and det.fusion_ is not None
    assert metrics.auroc(det.score(model, x), det.score(model, fgsm(model, x, y))) > 0.9


def test_mahalanobis_preprocessing_lowers_id_distances(world) -> None:
    model, train, _, x, _ = world
    plain = MahalanobisDetector().fit(model, train).score(model, x)
    pre = MahalanobisDetector(epsilon=0.005).fit(model, train).score(model, x)
    assert float(pre.mean()) < float(plain.mean())
    auto = MahalanobisDetector(epsilon="auto", epsilons=(0.0, 0.005), validation_size=100)
    auto.fit(model, train)
    assert auto.epsilon_ in (0.0, 0.005) and len(auto.criterion_) == 2
    assert auto.fit_summary() == {"epsilon": f"{auto.epsilon_:g}"}
    assert MahalanobisDetector(epsilon=0.005).fit(model, train).fit_summary() == {}


def test_mahalanobis_bad_params_raise(world) -> None:
    model, train, _, _, _ = world
    with pytest.raises(ValueError, match="shrinkage"):
        MahalanobisDetector(shrinkage="ridge").fit(model, train)
    with pytest.raises(InvalidInputError, match="logistic"):
        MahalanobisDetector(layers=("relu1", "logits"), combine="logistic").fit(model, train)


# ---------------------------------------------------------------------------- ELO
def test_elo_equals_sklearn_one_class_svm(world) -> None:
    model, train, _, x, _ = world
    det = create_detector("elo", layer="relu1").fit(model, train)
    assert det.fit_summary() == {}  # nothing chosen by fit
    f_train = extract_features(model, [train.as_float()], ["relu1"]).layers["relu1"].double()
    f_test = extract_features(model, [x], ["relu1"]).layers["relu1"].double()
    scaler = StandardScaler().fit(f_train.numpy())
    svm = OneClassSVM(nu=0.001, kernel="rbf", gamma="scale").fit(scaler.transform(f_train))
    expected = -svm.score_samples(scaler.transform(f_test.numpy()))
    np.testing.assert_allclose(det.score(model, x).numpy(), expected, rtol=1e-4, atol=1e-6)


def test_elo_auto_layer_is_an_early_layer(world) -> None:
    model, train, _, _, _ = world
    det = create_detector("elo").fit(model, train)
    assert det.layer_ in ("conv1", "relu1", "pool1", "conv2", "relu2")
    assert det.fit_summary() == {"layer": det.layer_}  # shown in bench reports


# ---------------------------------------------------------------------------- KD+BU
def test_log_kernel_density_equals_direct_sum_and_sklearn() -> None:
    g = torch.Generator().manual_seed(0)
    support, z = torch.randn(200, 5, generator=g) * 2, torch.randn(30, 5, generator=g) * 2
    sigma = 1.3
    got = log_kernel_density(z, support, sigma).numpy()
    sq = ((z.double()[:, None] - support.double()[None]) ** 2).sum(-1).numpy()
    direct = np.log(np.exp(-sq / (2 * sigma**2)).mean(axis=1)) - 2.5 * math.log(
        2 * math.pi * sigma**2
    )
    np.testing.assert_allclose(got, direct, rtol=1e-5)
    kde = KernelDensity(kernel="gaussian", bandwidth=sigma).fit(support.double().numpy())
    np.testing.assert_allclose(got, kde.score_samples(z.double().numpy()), rtol=1e-5)


@pytest.fixture(scope="module")
def kd_bu(world):
    model, train, _, _, _ = world
    adv = fgsm(model, train.as_float(), train.labels)
    return KDBUDetector(mc_passes=20).fit(model, train, anomalies=adv)


def test_kd_uses_the_training_inputs_of_the_predicted_class(world, kd_bu) -> None:
    model, train, _, x, _ = world
    kd_set, _ = train.split(kd_bu.holdout_fraction, seed=kd_bu.seed)
    feats = extract_features(model, [kd_set.as_float()], [kd_bu.layer_], "none")
    z_train, y_train = feats.layers[kd_bu.layer_], kd_set.labels
    raw, pred = kd_bu.raw_features(model, x)
    z = extract_features(model, [x], [kd_bu.layer_], "none").layers[kd_bu.layer_]
    for i in range(0, 300, 37):
        support = z_train[y_train == pred[i]].double().numpy()
        kde = KernelDensity(bandwidth=3.79).fit(support)
        expected = -kde.score_samples(z[i : i + 1].double().numpy())[0]
        assert float(raw[i, 0]) == pytest.approx(expected, rel=1e-5)


def test_bu_equals_variance_under_the_stored_masks(world, kd_bu) -> None:
    model, _, _, x, _ = world
    x = x[:40]
    bu = kd_bu.uncertainty(model, x)
    with torch.no_grad():
        h = model.relu3(model.fc1(model.flatten(model.relu2(model.conv2(
            model.pool1(model.relu1(model.conv1(x))))))))  # fmt: skip
        masks = kd_bu.masks_["drop"]  # T×16, kept units scaled by 1/(1−p)
        probs = torch.stack([torch.softmax(model.fc2(h * m).double(), 1) for m in masks])
    expected = (probs.square().sum(2).mean(0)) - probs.mean(0).square().sum(1)
    torch.testing.assert_close(bu, expected, rtol=1e-6, atol=1e-9)
    assert kd_bu.uses_bu_ and masks.shape == (20, 16)
    assert 0.7 < float((masks > 0).float().mean()) < 0.9  # p = 0.2
    assert kd_bu.mc_prefix_once_  # computed with the layers before `drop` run once


def test_bu_runs_the_layers_before_the_first_dropout_once(world, kd_bu) -> None:
    model, _, _, x, _ = world
    rows = []
    handle = model.conv1.register_forward_hook(lambda _m, i, _o: rows.append(len(i[0])))
    try:
        kd_bu.uncertainty(model, x[:40])
        raw, pred = kd_bu.raw_features(model, x[:40])
    finally:
        handle.remove()
    assert rows == [40, 40]  # BU, then KD and BU in one forward; not 20 passes × 40 each
    whole = copy.deepcopy(kd_bu)
    whole.mc_prefix_once_ = False
    raw_whole, pred_whole = whole.raw_features(model, x[:40])
    assert torch.equal(pred, pred_whole)
    torch.testing.assert_close(raw, raw_whole, rtol=1e-5, atol=1e-7)


def test_bu_in_several_chunks_matches_one(world, kd_bu, monkeypatch) -> None:
    model, _, _, x, _ = world
    one = kd_bu.raw_features(model, x[:40])
    monkeypatch.setattr(kd_bu_module, "_MC_ELEMENTS", 3 * 40 * kd_bu.mc_row_elements_)
    chunked = kd_bu.raw_features(model, x[:40])  # 21 passes (clean + 20) in chunks of 3
    assert torch.equal(chunked[1], one[1])
    torch.testing.assert_close(chunked[0], one[0], rtol=1e-5, atol=1e-7)


class _SkipAroundDropout(nn.Module):
    """The tiny world's net with fc1's output added back after the dropout: a T·N-row batch
    after the dropout meets the N-row skip, so its prefix cannot run once."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.base
        h = b.relu3(b.fc1(b.flatten(b.relu2(b.conv2(b.pool1(b.relu1(b.conv1(x))))))))
        return b.fc2(b.drop(h) + h)


def test_bu_falls_back_to_whole_passes_around_a_skip_connection(world) -> None:
    model, train, _, x, _ = world
    skip = _SkipAroundDropout(model)
    adv = fgsm(skip, train.as_float(), train.labels)
    det = KDBUDetector(mc_passes=20).fit(skip, train, anomalies=adv)
    assert det.uses_bu_ and not det.mc_prefix_once_
    x = x[:40]
    with torch.no_grad():
        h = model.relu3(model.fc1(model.flatten(model.relu2(model.conv2(
            model.pool1(model.relu1(model.conv1(x))))))))  # fmt: skip
        masks = det.masks_["base.drop"]
        probs = torch.stack([torch.softmax(model.fc2(h * m + h).double(), 1) for m in masks])
    torch.testing.assert_close(det.uncertainty(skip, x), probs.var(0, unbiased=False).sum(1))


def test_kd_bu_detects_fgsm_of_test_images(world, kd_bu) -> None:
    model, _, _, x, y = world
    assert metrics.auroc(kd_bu.score(model, x), kd_bu.score(model, fgsm(model, x, y))) > 0.9


def test_kd_bu_without_dropout_is_kd_alone(world, caplog) -> None:
    model, train, _, x, _ = world
    no_drop = copy.deepcopy(model)
    no_drop.drop.p = 0.0
    adv = fgsm(no_drop, train.as_float(), train.labels)
    with caplog.at_level(logging.WARNING, logger="tripwire.detectors.kd_bu"):
        det = KDBUDetector().fit(no_drop, train, anomalies=adv)
    assert "no dropout" in caplog.text and not det.uses_bu_
    raw, _ = det.raw_features(no_drop, x)
    assert torch.equal(raw[:, 1], torch.zeros(len(x), dtype=torch.float64))
    # The score is then an increasing function of −log KD alone.
    s = det.score(no_drop, x)
    assert float(det.fusion_.coef[0]) > 0
    order = torch.argsort(raw[:, 0])
    assert bool((s[order].diff() >= -1e-9).all())


def test_anomaly_fitted_detectors_refuse_to_fit_without_anomalies(world) -> None:
    model, train, _, _, _ = world
    for name in ("kd_bu", "lid"):
        with pytest.raises(InvalidInputError, match="anomalies"):
            create_detector(name).fit(model, train)


# ---------------------------------------------------------------------------- LID
def test_lid_mle_hand_computed() -> None:
    # x at 0, reference points at distances 1…20 on a line: LID = −1 / mean_i log(i / 20).
    x = torch.zeros(1, 3)
    ref = torch.zeros(30, 3)
    ref[:, 0] = torch.arange(1, 31, dtype=torch.float32)
    expected = -1.0 / np.mean(np.log(np.arange(1, 21) / 20))
    assert float(lid_mle(x, ref, k=20)[0]) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("dim", [2, 5])
def test_lid_mle_recovers_intrinsic_dimension(dim: int) -> None:
    g = torch.Generator().manual_seed(dim)
    basis = torch.linalg.qr(torch.randn(10, dim, generator=g))[0]  # orthonormal 10×dim
    points = torch.rand(3000, dim, generator=g) @ basis.T + torch.randn(10, generator=g)
    est = lid_mle(points[:300], points[300:], k=20)
    assert abs(float(est.mean()) - dim) < 0.2 * dim


def test_lid_exact_duplicate_in_the_reference_is_skipped() -> None:
    ref = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    with_dup = lid_mle(ref[:1], ref, k=10)
    without = lid_mle(ref[:1], ref[1:], k=10)
    torch.testing.assert_close(with_dup, without)


def test_lid_default_layers_and_detection(world) -> None:
    model, train, _, x, y = world
    assert default_layers(model) == ["relu1", "relu2", "relu3", "logits"]
    adv = fgsm(model, train.as_float(), train.labels)
    det = LIDDetector().fit(model, train, anomalies=adv)
    assert [r.shape[0] for r in det.reference_] == [100] * 4
    lids, _ = det.layer_lids(model, x)
    assert lids.shape == (300, 4) and bool((lids > 0).all())
    assert metrics.auroc(det.score(model, x), det.score(model, fgsm(model, x, y))) > 0.9


# ---------------------------------------------------------------------------- fusion
def test_logistic_fusion_standardises_with_id_statistics() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 2, generator=g) * torch.tensor([5.0, 1.0]) + 10
    b = a[:150] + torch.tensor([0.0, 3.0])
    fusion = LogisticFusion.fit(a, b)
    torch.testing.assert_close(fusion.mean, a.double().mean(0))
    torch.testing.assert_close(fusion.std, a.double().std(0, unbiased=False))
    assert float(fusion.coef[1]) > 0 and abs(float(fusion.coef[0])) < float(fusion.coef[1])
    assert metrics.auroc(fusion.score(a), fusion.score(b)) > 0.95


def test_fusion_needs_both_classes() -> None:
    with pytest.raises(InvalidInputError):
        LogisticFusion.fit(torch.randn(10, 2), torch.randn(1, 2))


def test_image_set_anomalies_are_accepted(world) -> None:
    model, train, _, x, _ = world
    adv = ImageSet("fgsm", fgsm(model, train.as_float(), train.labels))
    det = LIDDetector(k=10, reference_size=50).fit(model, train, anomalies=adv)
    assert det.score(model, x[:5]).shape == (5,)
