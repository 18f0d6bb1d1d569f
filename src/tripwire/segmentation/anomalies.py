"""Anomalies for segmentation inputs: noise, pasted out-of-distribution patches, and white-box
attacks on the per-pixel cross-entropy.

* `gaussian_noise` / `uniform_noise`: whole images of noise, N(0.5, σ²) clipped, or U[0, 1].
* `paste_patches`: each canvas gets 1…`max_patches` patches (e.g. Fashion-MNIST items or
  Omniglot characters — evaluation only) pasted at seeded random places, combined by maximum
  (white-on-black patches) so the canvas stays in [0, 1].
* `attack_segmentation`: FGSM (Goodfellow et al. 2015) / PGD (Madry et al. 2018, L∞, random
  start) maximising the mean per-pixel cross-entropy L(x) = mean_p CE(f(x)_p, y_p):
  x' = clip(x + ε·sign ∇ₓL) (FGSM); x_{t+1} = Π_ε(x_t + α·sign ∇ₓL(x_t)) (PGD).

Examples:
    >>> x = torch.rand(4, 1, 64, 64)
    >>> paste_patches(x, torch.rand(10, 1, 28, 28), seed=0).shape
    torch.Size([4, 1, 64, 64])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tripwire.errors import InvalidInputError
from tripwire.features import eval_mode


def gaussian_noise(shape: tuple[int, ...], sigma: float = 0.25, seed: int = 0) -> torch.Tensor:
    """Images of N(0.5, σ²) noise clipped to [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return (0.5 + sigma * torch.randn(shape, generator=g)).clamp(0, 1)


def uniform_noise(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Images of U[0, 1] noise."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def paste_patches(
    x: torch.Tensor, patches: torch.Tensor, *, max_patches: int = 2, seed: int = 0
) -> torch.Tensor:
    """Copies of canvases `x` (N×C×H×W) with 1…`max_patches` of `patches` (M×C×h×w) pasted in."""
    if x.ndim != 4 or patches.ndim != 4 or x.shape[1] != patches.shape[1]:
        raise InvalidInputError(
            f"canvases N×C×H×W and patches M×C×h×w must share C, got {tuple(x.shape)}, "
            f"{tuple(patches.shape)}"
        )
    h, w = patches.shape[2:]
    if h > x.shape[2] or w > x.shape[3]:
        raise InvalidInputError("patches must be smaller than the canvases")
    g = torch.Generator().manual_seed(seed)
    out = x.clone()
    for i in range(len(x)):
        for _ in range(int(torch.randint(1, max_patches + 1, (1,), generator=g))):
            j = int(torch.randint(len(patches), (1,), generator=g))
            y0 = int(torch.randint(x.shape[2] - h + 1, (1,), generator=g))
            x0 = int(torch.randint(x.shape[3] - w + 1, (1,), generator=g))
            region = out[i, :, y0 : y0 + h, x0 : x0 + w]
            torch.maximum(region, patches[j].to(out.dtype), out=region)
    return out


def attack_segmentation(
    model: nn.Module,
    x: torch.Tensor,
    masks: torch.Tensor,
    *,
    kind: str = "fgsm",
    eps: float = 0.1,
    steps: int = 10,
    alpha: float | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """FGSM or PGD-L∞ on the mean per-pixel cross-entropy; returns the adversarial images.

    The model's mode and parameters' ``requires_grad`` are restored afterwards.
    """
    if kind not in ("fgsm", "pgd"):
        raise ValueError(f"kind must be 'fgsm' or 'pgd', got {kind!r}")
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with eval_mode(model):
            if kind == "fgsm":
                return _step(model, x, x, masks, eps, eps)
            step = alpha if alpha is not None else 2.5 * eps / steps
            g = torch.Generator().manual_seed(seed)
            adv = (x + eps * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1)
            for _ in range(steps):
                adv = _step(model, adv, x, masks, step, eps)
            return adv
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)


def _step(
    model: nn.Module,
    adv: torch.Tensor,
    x: torch.Tensor,
    masks: torch.Tensor,
    step: float,
    eps: float,
) -> torch.Tensor:
    adv = adv.detach().requires_grad_(True)
    loss = F.cross_entropy(model(adv), masks)
    (grad,) = torch.autograd.grad(loss, adv)
    moved = adv.detach() + step * grad.sign()
    return torch.min(torch.max(moved, x - eps), x + eps).clamp(0, 1)
