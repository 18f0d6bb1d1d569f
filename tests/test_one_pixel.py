"""One-pixel attack (differential evolution): finds the one pixel that decides the class, is
reproducible from its seed and independent of the batch size, stays in [0, 1] and changes at
most k pixels; bad parameters are refused clearly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tripwire.anomalies import get_generator, list_generators
from tripwire.anomalies.one_pixel import _apply, _distinct_others
from tripwire.errors import InvalidInputError

H = W = 8


class OnePixelNet(nn.Module):
    """Class 1 iff the pixel at (5, 2) is bright; otherwise class 0. Only that pixel matters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, 5, 2]
        return torch.stack([10 * (0.5 - v), 10 * (v - 0.5)], dim=1)


class CountNet(nn.Module):
    """Class 1 iff at least 3 pixels are bright (> 0.5): one pixel can never flip a blank image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = (x > 0.5).any(dim=1).flatten(1).float().sum(1)  # bright pixel positions
        return torch.stack([2.5 - n, n - 2.5], dim=1)


def blank(n: int, channels: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return 0.2 * torch.rand(n, channels, H, W, generator=g)


def test_registered() -> None:
    assert "one-pixel" in {g.name for g in list_generators()}


def test_finds_the_deciding_pixel() -> None:
    x = blank(12)
    y = torch.zeros(12, dtype=torch.long)
    s = get_generator("one-pixel", population=20, iterations=40).generate(
        OnePixelNet(), x, y, seed=0
    )
    assert s.success.all()  # a 64-pixel search space: DE must find (5, 2) for every image
    assert (s.images[:, 0, 5, 2] > 0.5).all()
    assert (s.norms["l0"] == 1).all()


def test_reproducible_and_batch_independent() -> None:
    x = blank(10, channels=3)
    y = torch.zeros(10, dtype=torch.long)
    net = CountNet()
    gen = get_generator("one-pixel", pixels=3, population=16, iterations=15)
    a = gen.generate(net, x, y, seed=7)
    b = get_generator("one-pixel", batch_size=3, pixels=3, population=16, iterations=15).generate(
        net, x, y, seed=7
    )
    c = gen.generate(net, x, y, seed=8)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert a.success.float().mean() > 0  # 3 pixels can reach the count of 3


@pytest.mark.parametrize("k", [1, 3, 5])
def test_bounds_and_at_most_k_pixels(k: int) -> None:
    x = blank(6, channels=3)
    y = torch.zeros(6, dtype=torch.long)
    s = get_generator("one-pixel", pixels=k, population=8, iterations=5).generate(
        CountNet(), x, y, seed=1
    )
    assert s.images.min() >= 0.0 and s.images.max() <= 1.0
    changed = (s.images != x).any(dim=1).flatten(1).sum(1)  # pixel positions, all channels
    assert (changed <= k).all()
    if k == 1:
        assert not s.success.any()  # CountNet needs 3 bright pixels


def test_one_pixel_cannot_flip_count_net() -> None:
    x = blank(5)
    y = torch.zeros(5, dtype=torch.long)
    s = get_generator("one-pixel", population=10, iterations=5).generate(CountNet(), x, y)
    assert not s.success.any()
    assert (s.norms["l0"] <= 1).all()


def test_apply_sets_the_pixels() -> None:
    x = torch.zeros(2, 3, H, W)
    cand = torch.tensor([[[1.7, 6.2, 0.1, 0.2, 0.3]], [[7.9, 0.0, 1.0, 1.0, 1.0]]])
    out = _apply(x, cand)
    assert torch.allclose(out[0, :, 1, 6], torch.tensor([0.1, 0.2, 0.3]))
    assert torch.equal(out[1, :, 7, 0], torch.ones(3))
    assert int((out != 0).sum()) == 6


def test_distinct_others() -> None:
    r = _distinct_others(5, torch.Generator().manual_seed(0))
    i = torch.arange(5)[:, None]
    full = torch.cat([i, r], 1)
    assert all(len(set(row.tolist())) == 4 for row in full)


@pytest.mark.parametrize(
    "params", [{"pixels": 0}, {"population": 3}, {"f": 0.0}, {"iterations": -1}, {"pixels": 1.5}]
)
def test_bad_parameters(params: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        get_generator("one-pixel", **params)


def test_too_many_pixels() -> None:
    x = blank(2)
    with pytest.raises(InvalidInputError, match="exceeds"):
        get_generator("one-pixel", pixels=65, population=4, iterations=1).generate(
            OnePixelNet(), x, torch.zeros(2, dtype=torch.long)
        )
