"""`conform`: resizing and grey↔RGB conversion to what a model expects."""

from __future__ import annotations

import pytest
import torch

from tripwire.data.transforms import conform
from tripwire.errors import DataError


def test_already_fitting_batch_is_untouched() -> None:
    x = torch.rand(2, 1, 28, 28)
    assert conform(x, (1, 28, 28)) is x


def test_grey_to_rgb_replicates() -> None:
    x = torch.rand(3, 1, 8, 8)
    y = conform(x, (3, 8, 8))
    assert y.shape == (3, 3, 8, 8)
    assert all(torch.equal(y[:, c], x[:, 0]) for c in range(3))


def test_rgb_to_grey_is_bt601_luma() -> None:
    x = torch.zeros(1, 3, 4, 4)
    x[:, 0] = 1.0  # pure red
    assert torch.allclose(conform(x, (1, 4, 4)), torch.full((1, 1, 4, 4), 0.299))


def test_resize_shrinks_with_antialiasing() -> None:
    # A 1-px checkerboard averages to grey when shrunk 4× (no aliasing to black or white).
    i = torch.arange(64)
    board = ((i[:, None] + i[None, :]) % 2).float().view(1, 1, 64, 64)
    y = conform(board, (1, 16, 16))
    assert y.shape == (1, 1, 16, 16)
    assert torch.allclose(y, torch.full_like(y, 0.5), atol=0.02)


def test_resize_and_channels_together_stay_in_range() -> None:
    x = torch.rand(5, 3, 64, 48)
    y = conform(x, (1, 28, 28))
    assert y.shape == (5, 1, 28, 28) and float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_bad_shapes() -> None:
    with pytest.raises(DataError):
        conform(torch.rand(2, 28, 28), (1, 28, 28))
    with pytest.raises(DataError, match="channels"):
        conform(torch.rand(2, 5, 8, 8), (1, 8, 8))
