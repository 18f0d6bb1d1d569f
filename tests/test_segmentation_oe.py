"""Outlier exposure for the segmenter: pasting proxies, the entropy-maximisation loss of Chan et
al. (2021), and `train_segmenter(..., outliers=...)`."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from bar_digits import fake_digits
from tripwire.data.base import ImageSet
from tripwire.errors import InvalidInputError
from tripwire.segmentation import (
    BACKGROUND,
    NUM_CLASSES,
    SegmentationSet,
    TinyUNet,
    make_canvas_set,
    paste_outliers,
    segmentation_metrics,
    train_segmenter,
    uniform_cross_entropy,
)
from tripwire.segmentation.outlier_exposure import IGNORE


def rings(n: int) -> torch.Tensor:
    """Proxy outliers unlike any bar: bright rings of radius 3–5 in 12×12 patches."""
    ii, jj = torch.meshgrid(torch.arange(12.0) - 5.5, torch.arange(12.0) - 5.5, indexing="ij")
    r = (ii**2 + jj**2).sqrt()
    radius = 3.0 + 2.0 * torch.arange(n).float().view(-1, 1, 1) / max(1, n - 1)
    return (1.0 - (r - radius).abs()).clamp(0, 1).unsqueeze(1)


def old_train_segmenter(
    data: SegmentationSet, *, epochs: int, batch_size: int, lr: float, width: int, seed: int
) -> TinyUNet:
    """The training loop as it was before outlier exposure existed (reference, verbatim)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyUNet(data.images.shape[1], NUM_CLASSES, width)
    g = torch.Generator().manual_seed(seed)
    weight = torch.ones(NUM_CLASSES)
    weight[-1] = 0.2
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(data) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(data), generator=g)
        for s in range(0, len(data), batch_size):
            idx = perm[s : s + batch_size]
            loss = F.cross_entropy(model(data.images[idx]), data.masks[idx], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    digits, labels = fake_digits(200, seed=0)
    two = (labels == 0) | (labels == 5)  # two classes (horizontal, vertical): learnt quickly
    digits, labels = digits[two], labels[two]
    train = make_canvas_set(digits, labels, n=240, size=32, max_digits=2, seed=1)
    test = make_canvas_set(digits, labels, n=60, size=32, max_digits=2, seed=2)
    base = train_segmenter(train, epochs=6, batch_size=32, lr=1e-2, width=8, seed=0)
    return {"train": train, "test": test, "base": base}


def test_without_outliers_training_is_bit_for_bit_the_old_loop() -> None:
    digits, labels = fake_digits(60, seed=3)
    data = make_canvas_set(digits, labels, n=48, size=32, max_digits=2, seed=4)
    kw: dict[str, Any] = {"epochs": 2, "batch_size": 16, "lr": 1e-2, "width": 4, "seed": 5}
    new, old = train_segmenter(data, **kw), old_train_segmenter(data, **kw)
    for (name, a), b in zip(new.state_dict().items(), old.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # The outlier options are inert without outliers.
    inert = train_segmenter(data, outlier_weight=0.5, outlier_share=1.0, **kw)
    assert all(
        torch.equal(a, b)
        for a, b in zip(inert.state_dict().values(), old.state_dict().values(), strict=True)
    )


def test_paste_outliers_marks_exactly_the_bright_pasted_pixels() -> None:
    x = torch.zeros(50, 1, 32, 32)
    masks = torch.full((50, 32, 32), BACKGROUND)
    masks[:, :4] = 3  # some digit label that the pasting may overwrite
    patches = rings(5)
    g = torch.Generator().manual_seed(0)
    x2, m2, out = paste_outliers(x, masks, patches, share=0.5, threshold=0.3, generator=g)
    assert torch.equal(x, torch.zeros(50, 1, 32, 32))  # inputs untouched
    # On a black canvas the outlier pixels are exactly the pasted pixels ≥ threshold.
    assert torch.equal(out, x2[:, 0] >= 0.3)
    assert bool((m2[out] == IGNORE).all()) and torch.equal(m2[~out], masks[~out])
    hit = out.flatten(1).any(1).float().mean()
    assert 0.3 < float(hit) < 0.7  # about `share` of the canvases
    again = paste_outliers(
        x, masks, patches, share=0.5, threshold=0.3, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(again[0], x2) and torch.equal(again[2], out)
    with pytest.raises(InvalidInputError):
        paste_outliers(x, masks, torch.ones(2, 3, 8, 8), generator=g)
    with pytest.raises(InvalidInputError):
        paste_outliers(x, masks, torch.ones(2, 1, 40, 8), generator=g)


def test_uniform_cross_entropy_is_chan_et_al_l_out() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, 4, generator=g, requires_grad=True)
    where = torch.zeros(2, 4, 4, dtype=torch.bool)
    where[0, 1, 2] = where[1, 3, 0] = True
    expected = (
        -F.log_softmax(logits, 1)[0, :, 1, 2].mean() - F.log_softmax(logits, 1)[1, :, 3, 0].mean()
    ) / 2
    torch.testing.assert_close(uniform_cross_entropy(logits, where), expected)
    # Minimal (log K) exactly at the uniform prediction; larger for any peaked one.
    flat = uniform_cross_entropy(torch.zeros(2, 5, 4, 4), where)
    assert math.isclose(float(flat), math.log(5), rel_tol=1e-6)
    assert float(uniform_cross_entropy(logits, where).detach()) > math.log(5)
    empty = uniform_cross_entropy(logits, torch.zeros_like(where))
    empty.backward()
    assert float(empty.detach()) == 0.0 and logits.grad is not None


def pixel_entropy(model: TinyUNet, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        p = F.softmax(model(x), dim=1)
    return -(p * p.clamp_min(1e-12).log()).sum(1)


@pytest.mark.slow
def test_outlier_term_raises_the_entropy_on_pasted_pixels(world: dict[str, Any]) -> None:
    base, train, test = world["base"], world["train"], world["test"]
    before = {k: v.clone() for k, v in base.state_dict().items()}
    tuned = train_segmenter(
        train,
        init=base,
        outliers=rings(20),
        outlier_weight=0.5,
        epochs=3,
        batch_size=32,
        lr=2e-3,
        seed=1,
    )
    # `init` is copied, not modified.
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())
    g = torch.Generator().manual_seed(7)
    x, _, out = paste_outliers(
        test.images, test.masks, rings(20), share=1.0, max_patches=1, generator=g
    )
    h_base, h_tuned = pixel_entropy(base, x)[out], pixel_entropy(tuned, x)[out]
    assert float(h_tuned.mean()) > float(h_base.mean()) + 0.5
    assert float(h_tuned.mean()) > 0.6 * math.log(NUM_CLASSES)
    # ...more than on the clean canvases, which stay segmented.
    gap_base = float(h_base.mean() - pixel_entropy(base, test.images).mean())
    gap_tuned = float(h_tuned.mean() - pixel_entropy(tuned, test.images).mean())
    assert gap_tuned > gap_base + 0.3
    q_base, q_tuned = segmentation_metrics(base, test), segmentation_metrics(tuned, test)
    assert q_tuned["pixel_accuracy"] > q_base["pixel_accuracy"] - 0.03


def test_outlier_options_are_checked(world: dict[str, Any]) -> None:
    train = world["train"].subset(slice(0, 8))
    ok = ImageSet("rings", rings(4))
    for bad in (
        {"outliers": ok, "outlier_weight": 1.0},
        {"outliers": ok, "outlier_share": 0.0},
        {"outliers": ok, "max_outliers": 0},
        {"outliers": torch.ones(3, 2, 8, 8)},
        {"outliers": torch.ones(3, 1, 40, 40)},
        {"outliers": torch.full((3, 1, 8, 8), 2.0)},
        {"init": TinyUNet(in_channels=3, width=4)},
    ):
        with pytest.raises(InvalidInputError):
            train_segmenter(train, epochs=1, width=4, **bad)


def test_entropy_of_the_most_uncertain_pixels() -> None:
    from tripwire.segmentation import mean_entropy

    class Logits(torch.nn.Module):
        """Uniform over 11 classes where the image is 0, confident where it is 1."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(x.shape[0], 11, *x.shape[2:])
            logits[:, 0] = 50.0 * x[:, 0]
            return logits

    x = torch.ones(2, 1, 8, 8)
    x[0, :, :2] = 0.0  # a quarter of image 0 uncertain; image 1 confident everywhere
    log_k = math.log(11)
    whole, quarter = mean_entropy(Logits(), x), mean_entropy(Logits(), x, top=0.25)
    torch.testing.assert_close(whole[0], torch.tensor(log_k / 4, dtype=torch.float64))
    torch.testing.assert_close(quarter[0], torch.tensor(log_k, dtype=torch.float64))
    torch.testing.assert_close(
        mean_entropy(Logits(), x, top=0.5)[0], torch.tensor(log_k / 2, dtype=torch.float64)
    )
    assert float(quarter[1]) < 1e-12
    # top=1 is the plain mean; a fraction too small for one pixel still takes one.
    torch.testing.assert_close(mean_entropy(Logits(), x, top=1.0), whole)
    torch.testing.assert_close(mean_entropy(Logits(), x, top=1e-6)[0], quarter[0])
    with pytest.raises(InvalidInputError):
        mean_entropy(Logits(), x, top=0.0)
