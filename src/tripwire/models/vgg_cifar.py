"""VGG-16 with batch normalisation for 32×32 images (Simonyan & Zisserman 2015; the CIFAR
variant of Liu & Deng 2015), the second CIFAR-10 model of Zhao et al. (93.47 % in the paper)."""

from __future__ import annotations

import torch
from torch import nn

from tripwire.models.normalize import Normalize
from tripwire.models.resnet_cifar import CIFAR10_MEAN, CIFAR10_STD

# Channels of the 13 conv layers, by block; each block ends with a 2×2 max-pool.
VGG16_BLOCKS: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)


class VGG16Cifar(nn.Module):
    """VGG-16 for 32×32 inputs: 13 conv 3×3 + BN + ReLU layers in five blocks with max-pooling
    (32² → 1²), then fc1 512→512, relu_fc1, drop_fc1 and fc2 512→`num_classes` (logits).

    Layers are top-level and named by block and position: ``norm``, ``conv1_1``, ``bn1_1``,
    ``relu1_1``, ``conv1_2``, …, ``pool1``, …, ``conv5_3``, ``bn5_3``, ``relu5_3``, ``pool5``,
    ``flatten``, ``fc1``, ``relu_fc1``, ``drop_fc1``, ``fc2``. The forward pass runs them in
    that order. Input: N×C×32×32 in [0, 1] (C = len(mean)).

    Args:
        num_classes: outputs of ``fc2``.
        dropout: dropout probability before ``fc2``.
        mean, std: per-channel normalisation constants (CIFAR-10's by default).

    Examples:
        >>> VGG16Cifar()(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        dropout: float = 0.5,
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.norm = Normalize(mean, std)
        in_channels = len(mean)
        for b, block in enumerate(VGG16_BLOCKS, start=1):
            for i, channels in enumerate(block, start=1):
                conv = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
                self.add_module(f"conv{b}_{i}", conv)
                self.add_module(f"bn{b}_{i}", nn.BatchNorm2d(channels))
                self.add_module(f"relu{b}_{i}", nn.ReLU())
                in_channels = channels
            self.add_module(f"pool{b}", nn.MaxPool2d(2))
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(512, 512)
        self.relu_fc1 = nn.ReLU()
        self.drop_fc1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = layer(x)
        return x
