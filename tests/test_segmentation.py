"""The MNIST-canvas segmentation set, TinyUNet, segmentation anomalies and DAAIN on a segmenter."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.nn import functional as F

from bar_digits import fake_digits
from tripwire import metrics
from tripwire.data.base import DataError
from tripwire.detectors.daain import DaainDetector
from tripwire.errors import InvalidInputError, NotFittedError
from tripwire.segmentation import (
    BACKGROUND,
    ScoreFusion,
    TinyUNet,
    anomaly_map,
    attack_segmentation,
    cell_scores,
    gaussian_noise,
    image_scores,
    make_canvas_set,
    mean_entropy,
    paste_patches,
    segmentation_metrics,
    train_segmenter,
    uniform_noise,
)


def test_canvas_masks_follow_the_digits() -> None:
    digits, labels = fake_digits(30, seed=0)
    s = make_canvas_set(digits, labels, n=20, size=32, max_digits=2, threshold=0.3, seed=1)
    assert s.images.shape == (20, 1, 32, 32) and s.masks.shape == (20, 32, 32)
    assert float(s.images.min()) >= 0 and float(s.images.max()) <= 1
    fg = s.masks != BACKGROUND
    # Foreground exactly where some digit is bright; every image has at least one digit.
    assert torch.equal(fg, s.images[:, 0] >= 0.3)
    assert bool(fg.flatten(1).any(1).all())
    again = make_canvas_set(digits, labels, n=20, size=32, max_digits=2, threshold=0.3, seed=1)
    assert torch.equal(again.masks, s.masks)
    with pytest.raises(DataError):
        make_canvas_set(digits, labels, n=2, size=8)


def test_paste_patches_stays_in_range_and_only_adds() -> None:
    x = torch.rand(6, 1, 32, 32) * 0.5
    out = paste_patches(x, torch.ones(3, 1, 8, 8), max_patches=2, seed=0)
    changed = (out != x).flatten(1).sum(1)
    assert bool((changed > 0).all()) and bool((changed <= 2 * 64).all())
    assert bool((out >= x).all()) and float(out.max()) <= 1
    with pytest.raises(InvalidInputError):
        paste_patches(x, torch.ones(3, 3, 8, 8))


def test_noise_shapes_and_range() -> None:
    for img in (gaussian_noise((3, 1, 8, 8), seed=0), uniform_noise((3, 1, 8, 8), seed=0)):
        assert img.shape == (3, 1, 8, 8) and float(img.min()) >= 0 and float(img.max()) <= 1


@pytest.fixture(scope="module")
def seg_world() -> dict[str, Any]:
    digits, labels = fake_digits(200, seed=0)
    train = make_canvas_set(digits, labels, n=240, size=32, max_digits=2, seed=1)
    test = make_canvas_set(digits, labels, n=60, size=32, max_digits=2, seed=2)
    model = train_segmenter(train, epochs=4, batch_size=32, lr=1e-2, width=4, seed=0)
    return {"model": model, "train": train, "test": test}


def test_segmenter_learns(seg_world: dict[str, Any]) -> None:
    q = segmentation_metrics(seg_world["model"], seg_world["test"])
    assert q["pixel_accuracy"] > 0.9
    assert TinyUNet(width=4)(torch.rand(2, 1, 32, 32)).shape == (2, 11, 32, 32)


def test_attacks_stay_in_the_ball_and_raise_the_loss(seg_world: dict[str, Any]) -> None:
    model, test = seg_world["model"], seg_world["test"]
    x, y = test.images[:16], test.masks[:16]
    before = [p.requires_grad for p in model.parameters()]
    for kind in ("fgsm", "pgd"):
        adv = attack_segmentation(model, x, y, kind=kind, eps=0.1, steps=5)
        assert float((adv - x).abs().max()) <= 0.1 + 1e-6
        assert float(adv.min()) >= 0 and float(adv.max()) <= 1
        with torch.no_grad():
            assert float(F.cross_entropy(model(adv), y)) > float(F.cross_entropy(model(x), y))
    assert [p.requires_grad for p in model.parameters()] == before


def test_daain_on_a_segmenter(seg_world: dict[str, Any]) -> None:
    model, test = seg_world["model"], seg_world["test"]
    det = DaainDetector(key="seg", n_points=96, hidden=32, epochs=10, n_blocks=2)
    det.fit(model, seg_world["train"].as_image_set())
    assert det.num_classes_ == 11
    x = test.images
    scores, predicted = det.score_and_predict(model, x)
    assert scores.shape == (60,) and bool(((predicted >= 0) & (predicted <= 10)).all())
    noise = uniform_noise(tuple(x.shape), seed=3)
    assert metrics.auroc(scores, det.score(model, noise)) > 0.9
    # Per-pixel map: where a bright square was pasted, the map is higher than elsewhere.
    pasted = x.clone()
    pasted[:, :, :12, :12] = 1.0
    amap = anomaly_map(det, model, pasted, cell=4)
    assert amap.shape == (60, 32, 32)
    inside = amap[:, :12, :12].mean(dim=(1, 2))
    outside = amap[:, 16:, 16:].mean(dim=(1, 2))
    assert float((inside > outside).float().mean()) > 0.8
    # Per-image scores from the map: a noise patch pasted into one corner raises the top cell
    # of most images.
    patch = x.clone()
    patch[:, :, :8, :8] = torch.maximum(patch[:, :, :8, :8], torch.rand(60, 1, 8, 8))
    s_id, s_patch = image_scores(det, model, x, cell=4), image_scores(det, model, patch, cell=4)
    assert s_id.shape == (60,) and s_id.dtype == torch.float64
    assert float((s_patch > s_id).float().mean()) > 0.7


def test_cells_and_their_top_k_mean(seg_world: dict[str, Any]) -> None:
    model, x = seg_world["model"], seg_world["test"].images[:10]
    det = DaainDetector(key="cells", n_points=64, hidden=16, epochs=2, n_blocks=2)
    det.fit(model, seg_world["train"].as_image_set())
    grid = cell_scores(det, model, x, cell=8)
    assert grid.shape == (10, 4, 4)
    # Every cell that holds a point has a finite mean, and
    # the cell means weight each point by 1 / (points in its cell).
    filled = ~torch.isnan(grid[0])
    assert bool(filled.any()) and bool(torch.isfinite(grid[:, filled]).all())
    flat = grid.flatten(1)[:, filled.flatten()]
    # the reference means are taken in float32: float32's tolerances
    top2 = image_scores(det, model, x, cell=8, top_k=2)
    f32 = {"rtol": 1.3e-6, "atol": 1e-5}
    torch.testing.assert_close(top2, flat.topk(2, dim=1).values.mean(1).double(), **f32)
    everything = image_scores(det, model, x, cell=8, top_k=10_000)
    torch.testing.assert_close(everything, flat.mean(1).double(), **f32)
    with pytest.raises(InvalidInputError):
        image_scores(det, model, x, top_k=0)


def test_mean_entropy_baseline() -> None:
    class Logits(torch.nn.Module):
        """Per-pixel logits: uniform over 11 classes where the image is 0, one-hot-ish where 1."""

        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(50.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(x.shape[0], 11, *x.shape[2:])
            logits[:, 0] = self.scale * x[:, 0]
            return logits

    x = torch.zeros(3, 1, 8, 8)
    x[1] = 1.0
    x[2, :, :4] = 1.0  # half confident, half uniform
    h = mean_entropy(Logits(), x)
    assert h.shape == (3,) and h.dtype == torch.float64
    torch.testing.assert_close(h[0], torch.log(torch.tensor(11.0, dtype=torch.float64)))
    assert float(h[1]) < 1e-12
    torch.testing.assert_close(h[2], (h[0] + h[1]) / 2)


def test_fusion_pvalue_terms_are_exact_and_rank_based() -> None:
    cal = torch.tensor([4.0, 1.0, 3.0, 2.0])  # m = 4
    fusion = ScoreFusion(normalise="pvalue").fit(cal)
    t = fusion.transform(torch.tensor([0.0, 2.5, 4.0, 5.0]))[0]
    # p = (1 + #{c ≥ s}) / (m + 1): 5/5, 3/5, 2/5, 1/5.
    expected = -torch.log(torch.tensor([5.0, 3.0, 2.0, 1.0], dtype=torch.float64) / 5)
    torch.testing.assert_close(t, expected)
    # Only ranks among the ID scores matter: a monotone map of a score changes nothing.
    g = torch.Generator().manual_seed(0)
    id1, id2, x1, x2 = (torch.randn(50, generator=g) for _ in range(4))
    a = ScoreFusion().fit(id1, id2).score(x1, x2)
    b = ScoreFusion().fit(torch.exp(3 * id1), id2).score(torch.exp(3 * x1), x2)
    torch.testing.assert_close(a, b)


def test_fusion_zscore_weights_and_max() -> None:
    cal_a, cal_b = torch.tensor([0.0, 2.0]), torch.tensor([10.0, 10.0, 40.0])
    x_a, x_b = torch.tensor([1.0, 1.0 + 2**0.5]), torch.tensor([20.0, 20.0 + 3 * 17.320508])
    fusion = ScoreFusion(normalise="zscore").fit(cal_a, cal_b)
    za = torch.tensor([0.0, 1.0], dtype=torch.float64)  # mean 1, sd √2
    zb = torch.tensor([0.0, 3.0], dtype=torch.float64)  # mean 20, sd 17.32…
    torch.testing.assert_close(fusion.transform(x_a, x_b), torch.stack([za, zb]))
    torch.testing.assert_close(fusion.score(x_a, x_b), za + zb)
    fmax = ScoreFusion(normalise="zscore", combine="max", weights=[2.0, 0.5]).fit(cal_a, cal_b)
    torch.testing.assert_close(fmax.score(x_a, x_b), torch.maximum(2 * za, 0.5 * zb))


@pytest.mark.parametrize("normalise", ["pvalue", "zscore"])
@pytest.mark.parametrize("combine", ["sum", "max"])
def test_fusion_detects_what_either_detector_misses(normalise: str, combine: str) -> None:
    # Two detectors on very different scales; each sees only half of the anomalies.
    g = torch.Generator().manual_seed(1)
    n = 400

    def pair(shift_a: float, shift_b: float) -> tuple[torch.Tensor, torch.Tensor]:
        return 1000 + 50 * (torch.randn(n, generator=g) + shift_a), 0.01 * (
            torch.randn(n, generator=g) + shift_b
        ).exp()

    cal, ident = pair(0, 0), pair(0, 0)
    half_a, half_b = pair(4, 0), pair(0, 4)
    anom = (torch.cat([half_a[0], half_b[0]]), torch.cat([half_a[1], half_b[1]]))
    id2 = (torch.cat([ident[0], ident[0]]), torch.cat([ident[1], ident[1]]))
    fusion = ScoreFusion(normalise=normalise, combine=combine).fit(*cal)
    alone = [metrics.auroc(id2[j], anom[j]) for j in range(2)]
    fused = metrics.auroc(fusion.score(*id2), fusion.score(*anom))
    assert max(alone) < 0.8 and fused > 0.93


def test_fusion_rejects_bad_use() -> None:
    s = torch.rand(10)
    with pytest.raises(NotFittedError):
        ScoreFusion().score(s)
    with pytest.raises(InvalidInputError):
        ScoreFusion(normalise="rank").fit(s)
    with pytest.raises(InvalidInputError):
        ScoreFusion(weights=[1.0]).fit(s, s)
    with pytest.raises(InvalidInputError):
        ScoreFusion(normalise="zscore").fit(torch.ones(10))
    fusion = ScoreFusion().fit(s, s)
    with pytest.raises(InvalidInputError):
        fusion.score(s)
    with pytest.raises(InvalidInputError):
        fusion.score(s, torch.rand(9))
    with pytest.raises(InvalidInputError):
        fusion.score(s, torch.full((10,), float("nan")))
