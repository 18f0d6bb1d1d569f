"""A small fully-convolutional segmentation network (a two-level U-Net) and its training.

TinyUNet: enc1 (conv3×3 → ReLU, ×2) at full size, max-pool, enc2 at ½, max-pool, a bottleneck at
¼, then two decoder levels (bilinear ×2 up-sampling, concatenation with the skip, conv3×3 → ReLU)
and a 1×1 head to per-pixel logits N×K×H×W. Every activation is its own module, so detectors can
hook them (DAAIN monitors them all by default).

Example:
    >>> net = TinyUNet(num_classes=11)
    >>> net(torch.rand(2, 1, 64, 64)).shape
    torch.Size([2, 11, 64, 64])
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as F

from tripwire.progress import track
from tripwire.segmentation.canvas import NUM_CLASSES, SegmentationSet

log = logging.getLogger(__name__)


class TinyUNet(nn.Module):
    """Two-level U-Net; `width` channels at full resolution, 2× and 4× deeper down."""

    def __init__(
        self, in_channels: int = 1, num_classes: int = NUM_CLASSES, width: int = 8
    ) -> None:
        super().__init__()
        c1, c2, c3 = width, 2 * width, 4 * width
        self.enc1 = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.act1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.enc2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.act2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.mid = nn.Conv2d(c2, c3, 3, padding=1)
        self.act3 = nn.ReLU()
        self.dec2 = nn.Conv2d(c3 + c2, c2, 3, padding=1)
        self.act4 = nn.ReLU()
        self.dec1 = nn.Conv2d(c2 + c1, c1, 3, padding=1)
        self.act5 = nn.ReLU()
        self.head = nn.Conv2d(c1, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.act1(self.enc1(x))
        e2 = self.act2(self.enc2(self.pool1(e1)))
        m = self.act3(self.mid(self.pool2(e2)))
        up2 = F.interpolate(m, size=e2.shape[2:], mode="bilinear", align_corners=False)
        d2 = self.act4(self.dec2(torch.cat([up2, e2], dim=1)))
        up1 = F.interpolate(d2, size=e1.shape[2:], mode="bilinear", align_corners=False)
        d1 = self.act5(self.dec1(torch.cat([up1, e1], dim=1)))
        return self.head(d1)


def train_segmenter(
    data: SegmentationSet,
    *,
    epochs: int = 3,
    batch_size: int = 16,
    lr: float = 5e-3,
    width: int = 8,
    seed: int = 0,
) -> TinyUNet:
    """Train a TinyUNet on `data` with Adam and per-pixel cross-entropy (seeded); eval mode.

    The background class dominates the pixels, so it is down-weighted (weight 0.2) so that
    digits are learned quickly. About a minute on two CPU cores for 4000 64×64 canvases.
    """
    with torch.random.fork_rng(devices=[]):  # seeded init; the caller's RNG is restored
        torch.manual_seed(seed)
        model = TinyUNet(data.images.shape[1], NUM_CLASSES, width)
    g = torch.Generator().manual_seed(seed)
    weight = torch.ones(NUM_CLASSES)
    weight[-1] = 0.2
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(data) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for epoch in track(range(epochs), "segmenter epochs"):
        perm = torch.randperm(len(data), generator=g)
        total = 0.0
        for s in range(0, len(data), batch_size):
            idx = perm[s : s + batch_size]
            loss = F.cross_entropy(model(data.images[idx]), data.masks[idx], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        log.info("segmenter epoch %d: loss %.4f", epoch + 1, total / len(data))
    return model.eval()


@torch.no_grad()
def segmentation_metrics(
    model: nn.Module, data: SegmentationSet, batch_size: int = 128
) -> dict[str, float]:
    """Pixel accuracy, digit-pixel accuracy and mean IoU over the classes present."""
    was = model.training
    model.eval()
    inter = torch.zeros(NUM_CLASSES)
    union = torch.zeros(NUM_CLASSES)
    correct = digit_correct = digit_total = 0
    for s in range(0, len(data), batch_size):
        pred = model(data.images[s : s + batch_size]).argmax(1)
        true = data.masks[s : s + batch_size]
        correct += int((pred == true).sum())
        digit = true != NUM_CLASSES - 1
        digit_correct += int((pred == true)[digit].sum())
        digit_total += int(digit.sum())
        for c in range(NUM_CLASSES):
            p, t = pred == c, true == c
            inter[c] += (p & t).sum()
            union[c] += (p | t).sum()
    model.train(was)
    present = union > 0
    return {
        "pixel_accuracy": correct / data.masks.numel(),
        "digit_pixel_accuracy": digit_correct / max(1, digit_total),
        "mean_iou": float((inter[present] / union[present]).mean()),
    }
