"""Neural fingerprints: selection finds planted differences and ignores noise; the LR score;
per-input draws reproducible from content; the clean-only mode; pairing by source."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tiny_world import SHAPE, TinyNet
from tripwire import metrics
from tripwire.data.base import ImageSet
from tripwire.detectors import FingerprintDetector
from tripwire.detectors.fingerprints import (
    _random_subsets,
    _subset_means,
    auto_layers,
    first_activation,
    welch_select,
)
from tripwire.errors import InvalidInputError

D = 100  # synthetic "neurons" = pixels of a 1×10×10 image
PLANTED = torch.arange(10)  # neurons whose activation attacks raise


def identity_model() -> nn.Module:
    """Pixels are the activations (layer "0"); always predicts class 0."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(D, 2), nn.ReLU())
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].bias.copy_(torch.tensor([1.0, 0.0]))
    return net.eval()


def synthetic(n: int, seed: int, shift: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.1 * torch.rand(n, D, generator=g)
    x[:, PLANTED] += shift
    return x.view(n, 1, 10, 10)


def fit_synthetic(shift: float, **params) -> FingerprintDetector:  # type: ignore[no-untyped-def]
    det = FingerprintDetector(layers=["0"], subset_size=5, n_candidates=600, n_sample=10, **params)
    return det.fit(identity_model(), synthetic(400, 0, 0.0), anomalies=synthetic(400, 1, shift))


def test_welch_select_finds_planted_and_ignores_noise() -> None:
    g = torch.Generator().manual_seed(0)
    clean, attacked = torch.randn(300, 400, generator=g), torch.randn(300, 400, generator=g)
    attacked[:, :20] += 1.0
    keep, p, d = welch_select(clean, attacked, p_value=0.01, min_effect=0.1)
    assert keep[:20].all()
    assert keep[20:].float().mean() < 0.03  # false positives near the 1 % test level
    assert (d[:20] > 0.5).all() and (p[:20] < 1e-6).all()


def test_selection_keeps_subsets_with_planted_neurons() -> None:
    det = fit_synthetic(0.05)
    kept = det.indices_[: int(det.fingerprint_counts()[0])]
    hits = torch.isin(kept, PLANTED).sum(dim=1)
    assert len(kept) > 100
    assert (hits > 0).float().mean() > 0.97  # noise-only subsets are (nearly) never kept
    # Every candidate with ≥ 2 planted neurons (mean shift ≥ 0.02 vs sd ≈ 0.013) is kept.
    g = torch.Generator().manual_seed(det.seed)
    cand = torch.rand(det.n_candidates, D, generator=g).argsort(dim=1)[:, : det.subset_size]
    strong = cand[torch.isin(cand, PLANTED).sum(dim=1) >= 2]
    kept_rows = {tuple(r) for r in kept.tolist()}
    assert all(tuple(r) in kept_rows for r in strong.tolist())


def test_pure_noise_yields_almost_no_fingerprints(caplog: pytest.LogCaptureFixture) -> None:
    det = fit_synthetic(0.0, p_value=0.001)
    # Under the null almost nothing passes; the bank falls back to the n_sample best (warned).
    assert int(det.fingerprint_counts()[0]) == det.n_sample
    assert "pass the tests" in caplog.text


def test_llr_separates_attacked_from_clean() -> None:
    det = fit_synthetic(0.05)
    model = identity_model()
    clean, attacked = synthetic(200, 2, 0.0), synthetic(200, 3, 0.05)
    assert metrics.auroc(det.score(model, clean), det.score(model, attacked)) > 0.95
    vote = fit_synthetic(0.05, mode="vote")
    assert metrics.auroc(vote.score(model, clean), vote.score(model, attacked)) > 0.9


def test_draw_depends_on_content_not_position() -> None:
    det = fit_synthetic(0.05)
    model = identity_model()
    x = synthetic(30, 4, 0.02)
    a = det.score(model, x)
    b = det.score(model, x.flip(0)).flip(0)
    torch.testing.assert_close(a, b)
    # Different seeds draw different fingerprints for the same input.
    other = fit_synthetic(0.05, seed=1)
    assert not torch.allclose(a, other.score(model, x))


def test_random_per_call_varies() -> None:
    det = fit_synthetic(0.05, random_per_call=True)
    model = identity_model()
    x = synthetic(30, 5, 0.02)
    assert not torch.equal(det.score(model, x), det.score(model, x))


def test_clean_mode_needs_no_anomalies() -> None:
    det = FingerprintDetector(layers=["0"], subset_size=5, n_candidates=200, mode="clean")
    assert not det.needs_anomalies and FingerprintDetector().needs_anomalies
    model = identity_model()
    det.fit(model, synthetic(400, 0, 0.0))
    assert int(det.fingerprint_counts()[0]) == 200
    clean, odd = synthetic(100, 2, 0.0), synthetic(100, 3, 0.1)
    assert metrics.auroc(det.score(model, clean), det.score(model, odd)) > 0.95


def test_default_mode_without_anomalies_refused() -> None:
    with pytest.raises(InvalidInputError, match="anomalies"):
        FingerprintDetector(layers=["0"]).fit(identity_model(), synthetic(50, 0, 0.0))


def test_group_by_source_pairs_by_position_or_labels() -> None:
    model = identity_model()
    clean = synthetic(300, 0, 0.0)
    det = FingerprintDetector(layers=["0"], subset_size=5, n_candidates=200, group_by="source")
    det.fit(model, clean, anomalies=synthetic(300, 1, 0.05))  # paired by position: fine
    labelled = ImageSet("adv", synthetic(120, 1, 0.05), torch.zeros(120, dtype=torch.long))
    det.fit(model, clean, anomalies=labelled)
    with pytest.raises(InvalidInputError, match="source"):
        det.fit(model, clean, anomalies=synthetic(120, 1, 0.05))


def test_auto_layers_take_the_inputs_of_the_last_dense_layers() -> None:
    model = TinyNet().eval()
    # TinyNet: flatten → fc1 → relu3 → dropout → fc2; dropout is skipped for relu3.
    assert auto_layers(model, torch.rand(2, *SHAPE)) == ["relu3", "flatten"]
    with pytest.raises(InvalidInputError, match=r"nn\.Linear"):
        auto_layers(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.rand(1, 1, 5, 5))


def test_first_activation_is_the_default_layer() -> None:
    model = TinyNet().eval()
    assert first_activation(model, torch.rand(2, *SHAPE)) == ["relu1"]
    with pytest.raises(InvalidInputError, match="activation"):
        first_activation(nn.Sequential(nn.Flatten(), nn.Linear(25, 2)), torch.rand(1, 1, 5, 5))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(60, *SHAPE, generator=g)
    shifted = (x + 0.3 * torch.rand(60, *SHAPE, generator=g)).clamp(0, 1)
    det = FingerprintDetector(n_candidates=100, n_sample=5).fit(model, x, anomalies=shifted)
    assert det.layers_ == ["relu1"] and det.n_neurons_ == 4 * 12 * 12
    old = FingerprintDetector(layers="penultimate", n_candidates=100, n_sample=5)
    assert old.fit(model, x, anomalies=shifted).layers_ == ["relu3", "flatten"]


def test_subset_means_match_a_dense_selection() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 40, generator=g)
    cand = torch.rand(25, 40, generator=g).argsort(dim=1)[:, :7]
    sel = torch.zeros(40, 25)
    sel.scatter_(0, cand.T, 1.0 / 7)
    torch.testing.assert_close(_subset_means(x, cand, rows=64), x @ sel)


def test_random_subsets_are_distinct_indices_drawn_uniformly() -> None:
    cand = _random_subsets(2000, 10, 3, torch.Generator().manual_seed(0), rows=64)
    assert cand.shape == (2000, 3)
    assert int(cand.min()) >= 0 and int(cand.max()) < 10
    assert all(len(set(row.tolist())) == 3 for row in cand)
    counts = torch.bincount(cand.flatten(), minlength=10)  # 600 expected per neuron
    assert int(counts.min()) > 500 and int(counts.max()) < 700


def test_random_subsets_in_row_chunks_reproduce_the_one_shot_draw() -> None:
    """Earlier versions drew all k rows of noise at once; the chunked draw must give the same
    subsets so that fitted detectors and benchmark rows stay reproducible."""
    whole = torch.rand(150, 50, generator=torch.Generator().manual_seed(3)).argsort(dim=1)[:, :4]
    chunked = _random_subsets(150, 50, 4, torch.Generator().manual_seed(3), rows=64)
    assert torch.equal(chunked, whole)


def test_collect_over_several_batches_matches_one_forward() -> None:
    x = synthetic(1100, 2, 0.0)  # three batches of 512
    det = FingerprintDetector(layers=["0"])
    det.layers_ = ["0"]
    acts, preds = det._collect(identity_model(), ImageSet(name="x", images=x), "clean")
    torch.testing.assert_close(acts, x.flatten(1))
    assert torch.equal(preds, torch.zeros(1100, dtype=torch.long))


def test_empty_anomaly_set_is_refused_clearly() -> None:
    empty = ImageSet(name="fgsm", images=synthetic(1, 1, 0.0)[:0])
    with pytest.raises(InvalidInputError, match="attacked set is empty"):
        FingerprintDetector(layers=["0"], n_candidates=50).fit(
            identity_model(), synthetic(50, 0, 0.0), anomalies=empty
        )
