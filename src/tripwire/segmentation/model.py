"""A small fully-convolutional segmentation network (a three-level U-Net) and its training.

TinyUNet: each level is conv3×3 → BatchNorm → ReLU. enc1 at full size, max-pool, enc2 at ½,
enc3 at ¼, a bottleneck at ⅛, then three decoder levels (bilinear ×2 up-sampling, concatenation
with the skip) and a 1×1 head to per-pixel logits N×K×H×W. Every activation is its own module, so
detectors can hook them (DAAIN monitors them all by default).

Examples:
    >>> net = TinyUNet(num_classes=11)
    >>> net(torch.rand(2, 1, 64, 64)).shape
    torch.Size([2, 11, 64, 64])
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from torch.nn import functional as F

from tripwire.data.base import ImageSet, to_float
from tripwire.errors import InvalidInputError
from tripwire.progress import track
from tripwire.segmentation.canvas import NUM_CLASSES, SegmentationSet
from tripwire.segmentation.outlier_exposure import IGNORE, paste_outliers, uniform_cross_entropy

log = logging.getLogger(__name__)


class TinyUNet(nn.Module):
    """Three-level U-Net; `width` channels at full resolution, 2×, 4× and 8× deeper down.

    The bottleneck at ⅛ resolution gives the deepest path a receptive field of about 60 pixels,
    wide enough to see a whole 28×28 digit (a two-level net saw ~20 and barely told digits
    apart).
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = NUM_CLASSES, width: int = 8
    ) -> None:
        super().__init__()
        c1, c2, c3, c4 = width, 2 * width, 4 * width, 8 * width
        self.enc1 = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c1)
        self.act1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.enc2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c2)
        self.act2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.enc3 = nn.Conv2d(c2, c3, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(c3)
        self.act3 = nn.ReLU()
        self.pool3 = nn.MaxPool2d(2)
        self.mid = nn.Conv2d(c3, c4, 3, padding=1)
        self.bn4 = nn.BatchNorm2d(c4)
        self.act4 = nn.ReLU()
        self.dec3 = nn.Conv2d(c4 + c3, c3, 3, padding=1)
        self.bn5 = nn.BatchNorm2d(c3)
        self.act5 = nn.ReLU()
        self.dec2 = nn.Conv2d(c3 + c2, c2, 3, padding=1)
        self.bn6 = nn.BatchNorm2d(c2)
        self.act6 = nn.ReLU()
        self.dec1 = nn.Conv2d(c2 + c1, c1, 3, padding=1)
        self.bn7 = nn.BatchNorm2d(c1)
        self.act7 = nn.ReLU()
        self.head = nn.Conv2d(c1, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.act1(self.bn1(self.enc1(x)))
        e2 = self.act2(self.bn2(self.enc2(self.pool1(e1))))
        e3 = self.act3(self.bn3(self.enc3(self.pool2(e2))))
        m = self.act4(self.bn4(self.mid(self.pool3(e3))))
        d3 = self.act5(self.bn5(self.dec3(torch.cat([_up(m, e3), e3], dim=1))))
        d2 = self.act6(self.bn6(self.dec2(torch.cat([_up(d3, e2), e2], dim=1))))
        d1 = self.act7(self.bn7(self.dec1(torch.cat([_up(d2, e1), e1], dim=1))))
        return self.head(d1)


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)


def train_segmenter(
    data: SegmentationSet,
    *,
    epochs: int = 6,
    batch_size: int = 16,
    lr: float = 5e-3,
    width: int = 8,
    seed: int = 0,
    init: TinyUNet | None = None,
    outliers: ImageSet | torch.Tensor | None = None,
    outlier_weight: float = 0.9,
    outlier_share: float = 0.5,
    max_outliers: int = 2,
    outlier_threshold: float = 0.3,
) -> TinyUNet:
    """Train a TinyUNet on `data` with Adam and per-pixel cross-entropy (seeded); eval mode.

    The background class dominates the pixels, so it is down-weighted (weight 0.2) so that
    digits are learned quickly. With the defaults, 4000 64×64 MNIST canvases take about 4 minutes
    on one busy CPU core and reach mean IoU ≈ 0.73 on test canvases.

    **Outlier exposure** (Chan, Rottmann & Gottschalk, ICCV 2021, "Entropy Maximization and Meta
    Classification for OoD Detection in Semantic Segmentation"): with `outliers` (proxy patches,
    never the evaluation anomalies), every batch gets 1…`max_outliers` patches pasted into a
    random `outlier_share` of its canvases (`paste_outliers`; pixels where a patch is ≥
    `outlier_threshold` are outlier pixels P_out) and the loss becomes

        L = (1 − λ) · CE_w(in-distribution pixels) + λ · (1/|P_out|) Σ_{p∈P_out} −(1/K) Σ_k
            log softmax(f(x)_p)_k,        λ = `outlier_weight` (0.9 in the paper),

    the cross-entropy to the uniform distribution on the pasted pixels, i.e. entropy
    maximisation there. As in the paper, the segmenter is normally fine-tuned: pass the trained
    model as `init` (it is copied, not modified) with a few `epochs` and a smaller `lr`. The
    pasting draws from a second generator seeded with `seed + 1`. Without `outliers` the
    training is exactly the plain one (same seed → the same weights, bit for bit). On the
    MNIST canvases (research/notebook.md, DAAIN) the paper's λ = 0.9 degraded the tiny TinyUNet's
    segmentation; λ = 0.5 with 24 epochs at lr 3e-3 was chosen on validation anomalies.

    Args:
        data: training canvases and masks.
        epochs, batch_size, lr: Adam with a one-cycle schedule peaking at `lr`.
        width: channels at full resolution (ignored with `init`).
        seed: seeds the initial weights, the batch order and the pasting.
        init: start from a copy of this model (fine-tuning) instead of fresh weights.
        outliers: proxy outlier patches M×C×h×w in [0, 1] (an ImageSet or a tensor).
        outlier_weight: λ ∈ [0, 1).
        outlier_share: probability that a training canvas gets patches, in (0, 1].
        max_outliers: at most this many patches per chosen canvas.
        outlier_threshold: patch intensity from which a pasted pixel is an outlier pixel.

    Examples:
        >>> net = train_segmenter(train)                                      # doctest: +SKIP
        >>> letters = load_source("font-letters-kz", "train")                 # doctest: +SKIP
        >>> oe = train_segmenter(train, init=net, outliers=letters, lr=1e-3)  # doctest: +SKIP
    """
    patches = _outlier_patches(data, outliers, outlier_weight, outlier_share, max_outliers)
    if init is None:
        with torch.random.fork_rng(devices=[]):  # seeded init; the caller's RNG is restored
            torch.manual_seed(seed)
            model = TinyUNet(data.images.shape[1], NUM_CLASSES, width)
    else:
        if init.enc1.in_channels != data.images.shape[1] or init.head.out_channels != NUM_CLASSES:
            raise InvalidInputError(
                f"init takes {init.enc1.in_channels} channels to {init.head.out_channels} "
                f"classes; the data need {data.images.shape[1]} to {NUM_CLASSES}"
            )
        model = copy.deepcopy(init)
    g = torch.Generator().manual_seed(seed)
    g_out = torch.Generator().manual_seed(seed + 1)
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
            if patches is None:
                loss = F.cross_entropy(model(data.images[idx]), data.masks[idx], weight=weight)
            else:
                x, y, where = paste_outliers(
                    data.images[idx],
                    data.masks[idx],
                    patches,
                    share=outlier_share,
                    max_patches=max_outliers,
                    threshold=outlier_threshold,
                    generator=g_out,
                )
                logits = model(x)
                loss = (1 - outlier_weight) * F.cross_entropy(
                    logits, y, weight=weight, ignore_index=IGNORE
                ) + outlier_weight * uniform_cross_entropy(logits, where)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        log.info("segmenter epoch %d: loss %.4f", epoch + 1, total / len(data))
    return model.eval()


def _outlier_patches(
    data: SegmentationSet,
    outliers: ImageSet | torch.Tensor | None,
    weight: float,
    share: float,
    max_outliers: int,
) -> torch.Tensor | None:
    """The proxy patches as float32 in [0, 1], after checking the outlier options."""
    if outliers is None:
        return None
    if not 0.0 <= weight < 1.0:
        raise InvalidInputError(f"outlier_weight (λ) must be in [0, 1), got {weight}")
    if not 0.0 < share <= 1.0:
        raise InvalidInputError(f"outlier_share must be in (0, 1], got {share}")
    if max_outliers < 1:
        raise InvalidInputError(f"max_outliers must be ≥ 1, got {max_outliers}")
    x = outliers.as_float() if isinstance(outliers, ImageSet) else to_float(outliers)
    if x.ndim != 4 or len(x) == 0 or x.shape[1] != data.images.shape[1]:
        raise InvalidInputError(
            f"outliers must be a non-empty M×{data.images.shape[1]}×h×w set, got {tuple(x.shape)}"
        )
    if x.shape[2] > data.images.shape[2] or x.shape[3] > data.images.shape[3]:
        raise InvalidInputError(
            f"outlier patches {tuple(x.shape[2:])} are larger than the canvases "
            f"{tuple(data.images.shape[2:])}"
        )
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
        raise InvalidInputError("outlier patches must be finite and in [0, 1]")
    return x


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
