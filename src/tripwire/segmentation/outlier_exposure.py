"""Outlier exposure for segmenters: proxy outliers pasted into training canvases, and the
entropy-maximisation loss on their pixels (Chan, Rottmann & Gottschalk, "Entropy Maximization
and Meta Classification for Out-of-Distribution Detection in Semantic Segmentation", ICCV 2021).

Chan et al. paste COCO objects into Cityscapes scenes and fine-tune the segmenter with

    L = (1 − λ) · L_in + λ · L_out,                                   (λ = 0.9 in their paper)
    L_in  = the usual (class-weighted) per-pixel cross-entropy over the in-distribution pixels,
    L_out = (1/|P_out|) Σ_{p ∈ P_out} −(1/K) Σ_k log softmax(f(x)_p)_k,

i.e. on the pasted pixels P_out the cross-entropy to the uniform distribution over the K
classes, which equals log K + KL(u ‖ softmax) and is minimal exactly where the prediction has
maximal entropy. At test time the per-pixel entropy then lights up on unknown objects.

`paste_outliers` pastes 1…`max_patches` proxy patches into a random share of a batch (combined
by maximum, as `paste_patches` does for the evaluation anomalies) and marks as outlier pixels
the pasted patch's pixels ≥ `threshold` — the same rule that makes a pixel a digit pixel in
the canvas masks; `uniform_cross_entropy` is L_out. `train_segmenter(..., outliers=...)` uses
both.

Examples:
    >>> g = torch.Generator().manual_seed(0)
    >>> x, m = torch.zeros(4, 1, 32, 32), torch.full((4, 32, 32), 10)
    >>> x2, m2, out = paste_outliers(x, m, torch.ones(3, 1, 8, 8), share=1.0, generator=g)
    >>> bool(out.flatten(1).any(1).all()), int(m2[out].unique())
    (True, -100)
    >>> float(uniform_cross_entropy(torch.zeros(4, 11, 32, 32), out))  # uniform: log 11
    2.397895...
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from tripwire.errors import InvalidInputError

IGNORE = -100  # F.cross_entropy's default ignore_index: outlier pixels leave L_in


def paste_outliers(
    images: torch.Tensor,
    masks: torch.Tensor,
    patches: torch.Tensor,
    *,
    share: float = 0.5,
    max_patches: int = 2,
    threshold: float = 0.3,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paste proxy outliers into a random `share` of the canvases (for training).

    Each chosen canvas gets 1…`max_patches` patches drawn from `patches` (M×C×h×w, float in
    [0, 1]) at uniformly random positions, combined by maximum. Pixels where a pasted patch is
    ≥ `threshold` become outlier pixels: their mask entry is set to `IGNORE` (so the
    in-distribution loss skips them) and they are flagged in the returned boolean map.

    Args:
        images: canvases N×C×H×W in [0, 1] (not modified).
        masks: class masks N×H×W int64 (not modified).
        patches: proxy outlier patches M×C×h×w, h ≤ H, w ≤ W.
        share: probability that a canvas gets patches.
        max_patches: at most this many patches per chosen canvas.
        threshold: patch intensity from which a pasted pixel counts as an outlier pixel.
        generator: the source of randomness (seeded by the caller).

    Returns:
        (images with patches, masks with `IGNORE` on outlier pixels, outlier map N×H×W bool).
    """
    if images.ndim != 4 or patches.ndim != 4 or images.shape[1] != patches.shape[1]:
        raise InvalidInputError(
            f"canvases N×C×H×W and patches M×C×h×w must share C, got {tuple(images.shape)}, "
            f"{tuple(patches.shape)}"
        )
    if masks.shape != (images.shape[0], *images.shape[2:]):
        raise InvalidInputError(f"masks must be N×H×W for the canvases, got {tuple(masks.shape)}")
    h, w = patches.shape[2:]
    if len(patches) == 0 or h > images.shape[2] or w > images.shape[3]:
        raise InvalidInputError("need at least one patch, no larger than the canvases")
    n = len(images)
    chosen = torch.rand(n, generator=generator) < share
    counts = torch.randint(1, max_patches + 1, (n,), generator=generator)
    out_x, out_m = images.clone(), masks.clone()
    outlier = torch.zeros(masks.shape, dtype=torch.bool)
    for i in torch.nonzero(chosen).flatten().tolist():
        for _ in range(int(counts[i])):
            j = int(torch.randint(len(patches), (1,), generator=generator))
            y0 = int(torch.randint(images.shape[2] - h + 1, (1,), generator=generator))
            x0 = int(torch.randint(images.shape[3] - w + 1, (1,), generator=generator))
            patch = patches[j].to(out_x.dtype)
            region = out_x[i, :, y0 : y0 + h, x0 : x0 + w]
            torch.maximum(region, patch, out=region)
            outlier[i, y0 : y0 + h, x0 : x0 + w] |= patch.amax(0) >= threshold
    out_m[outlier] = IGNORE
    return out_x, out_m, outlier


def uniform_cross_entropy(logits: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """L_out of Chan et al. (2021): the mean over the pixels in `where` (N×H×W bool) of the
    cross-entropy between the uniform distribution and softmax(logits) (N×K×H×W),
    −(1/K) Σ_k log softmax_k; 0 (with a gradient) when `where` is empty."""
    if where.shape != (logits.shape[0], *logits.shape[2:]):
        raise InvalidInputError(
            f"where must be N×H×W for logits N×K×H×W, got {tuple(where.shape)}, "
            f"{tuple(logits.shape)}"
        )
    per_pixel = -F.log_softmax(logits, dim=1).mean(dim=1)  # N×H×W
    if not bool(where.any()):
        return per_pixel.sum() * 0.0
    return per_pixel[where].mean()
