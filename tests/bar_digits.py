"""Stand-ins for MNIST digits in the segmentation tests: class c is a bar at angle c·18°."""

from __future__ import annotations

import torch


def fake_digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n images 1×12×12 of bars, white on black, with their classes 0–9 (seeded)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    ii, jj = torch.meshgrid(torch.arange(12.0) - 5.5, torch.arange(12.0) - 5.5, indexing="ij")
    theta = labels.float().view(-1, 1, 1) * torch.pi / 10
    dist = (ii * torch.cos(theta) - jj * torch.sin(theta)).abs()
    img = (1.0 - dist / 1.5).clamp(0, 1) * (ii**2 + jj**2 < 30).float()
    return img.unsqueeze(1), labels
