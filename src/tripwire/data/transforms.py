"""Making a batch of images fit a model: resize and grey↔RGB conversion."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tripwire.errors import DataError

# ITU-R BT.601 luma weights (as Pillow's convert("L") and OpenCV use).
LUMA_601 = (0.299, 0.587, 0.114)


def conform(images: torch.Tensor, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """Convert a float N×C×H×W batch in [0, 1] to the (C, H, W) a model expects.

    Channels: grey → RGB replicates the channel; RGB → grey is ITU-R BT.601 luma
    ``Y = 0.299 R + 0.587 G + 0.114 B``; RGBA drops alpha first. Size: bilinear interpolation
    with antialiasing (``torch.nn.functional.interpolate(mode="bilinear", antialias=True,
    align_corners=False)``), so shrinking averages over each output pixel's footprint. The result
    is clamped to [0, 1]. A batch that already fits is returned unchanged (same tensor).

    Examples:
        >>> conform(torch.rand(2, 3, 64, 64), (1, 28, 28)).shape
        torch.Size([2, 1, 28, 28])
    """
    if images.ndim != 4:
        raise DataError(f"images must be N×C×H×W, got shape {tuple(images.shape)}")
    c_out, h_out, w_out = image_shape
    if c_out not in (1, 3):
        raise DataError(f"can only convert to 1 or 3 channels, the model wants {c_out}")
    x = images if images.dtype.is_floating_point else images.float().div(255.0)
    c = x.shape[1]
    if c == 4:
        x, c = x[:, :3], 3
    if c not in (1, 3):
        raise DataError(f"images have {c} channels; tripwire converts between 1 and 3")
    if x.shape[2:] != (h_out, w_out):
        x = F.interpolate(
            x, size=(h_out, w_out), mode="bilinear", antialias=True, align_corners=False
        )
        x = x.clamp(0.0, 1.0)
    if c == 1 and c_out == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
    elif c == 3 and c_out == 1:
        w = torch.tensor(LUMA_601, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * w).sum(dim=1, keepdim=True).clamp(0.0, 1.0)
    return x
