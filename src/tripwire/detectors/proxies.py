"""Synthetic validation anomalies made from in-distribution images only.

Used where a detector must choose something (e.g. the uniform detector's most discriminative
layer) without ever seeing a test anomaly set. Each proxy destroys a different property of the
ID images while keeping others, so no single test family is imitated:

* ``pixel-shuffle`` — the pixels of each image randomly permuted (intensity histogram kept,
  all structure gone);
* ``tile-shuffle`` — the image cut into a 4×4 grid of tiles, tiles permuted (local strokes
  kept, global shape gone);
* ``random-sign`` — x + 0.3·sign(u), u random, clipped (a blind L∞ perturbation of the size
  attacks use, but with no gradient);
* ``mixup`` — the average of two ID images (plausible strokes, implausible shape);
* ``smooth-noise`` — low-frequency random fields (box-blurred uniform noise, contrast stretched).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

ProxyFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def pixel_shuffle(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Permute the pixels of each image (the same permutation across its channels)."""
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    perm = torch.argsort(torch.rand(n, h * w, generator=g), dim=1)
    return torch.gather(flat, 2, perm.unsqueeze(1).expand(n, c, h * w)).reshape(n, c, h, w)


def tile_shuffle(x: torch.Tensor, g: torch.Generator, grid: int = 4) -> torch.Tensor:
    """Cut into grid×grid tiles (cropping the remainder) and permute the tiles of each image."""
    n, c, h, w = x.shape
    th, tw = h // grid, w // grid
    out = x.clone()
    tiles = (
        x[:, :, : th * grid, : tw * grid]
        .reshape(n, c, grid, th, grid, tw)
        .permute(0, 2, 4, 1, 3, 5)
        .reshape(n, grid * grid, c, th, tw)
    )
    perm = torch.argsort(torch.rand(n, grid * grid, generator=g), dim=1)
    tiles = tiles[torch.arange(n).unsqueeze(1), perm]
    out[:, :, : th * grid, : tw * grid] = (
        tiles.reshape(n, grid, grid, c, th, tw)
        .permute(0, 3, 1, 4, 2, 5)
        .reshape(n, c, th * grid, tw * grid)
    )
    return out


def random_sign(x: torch.Tensor, g: torch.Generator, eps: float = 0.3) -> torch.Tensor:
    """x + eps·(random ±1 per pixel), clipped to [0, 1]."""
    sign = torch.randint(0, 2, x.shape, generator=g).to(x.dtype) * 2 - 1
    return (x + eps * sign).clamp(0, 1)


def mixup(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The mean of each image and another, randomly paired, image."""
    perm = torch.randperm(x.shape[0], generator=g)
    return 0.5 * (x + x[perm])


def smooth_noise(x: torch.Tensor, g: torch.Generator, kernel: int = 5) -> torch.Tensor:
    """Box-blurred uniform noise, stretched to [0, 1] per image."""
    n, c, h, w = x.shape
    noise = torch.rand(n, c, h, w, generator=g)
    blurred = F.avg_pool2d(noise, kernel, stride=1, padding=kernel // 2, count_include_pad=False)
    lo = blurred.amin(dim=(1, 2, 3), keepdim=True)
    hi = blurred.amax(dim=(1, 2, 3), keepdim=True)
    return (blurred - lo) / (hi - lo).clamp_min(1e-6)


PROXIES: dict[str, ProxyFn] = {
    "pixel-shuffle": pixel_shuffle,
    "tile-shuffle": tile_shuffle,
    "random-sign": random_sign,
    "mixup": mixup,
    "smooth-noise": smooth_noise,
}


def make_proxies(x: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every proxy applied to the ID images `x` (float N×C×H×W in [0, 1]), seeded."""
    out = {}
    for i, (name, fn) in enumerate(PROXIES.items()):
        g = torch.Generator().manual_seed(seed * 1000 + i)
        out[name] = fn(x, g).clamp(0, 1)
    return out
