"""The CIFAR-style ResNet of He et al. (2016, §4.2), depth 6n+2 (20, 32, 44, 56, 110).

Zhao et al. used ResNet-44 for CIFAR-10 (91.65 % test accuracy in the paper).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tripwire.models.normalize import Normalize

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class BasicBlock(nn.Module):
    """Two 3×3 conv + BN layers with an identity shortcut.

    Where the block halves the resolution and doubles the channels, the shortcut is He et al.'s
    option A: stride-2 subsampling and zero-padded channels (no parameters).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.stride = stride
        self.pad = out_channels - in_channels

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """CIFAR ResNet of depth 6n+2: a 3×3 conv, three stages of n basic blocks (16, 32, 64
    channels at 32², 16², 8²), global average pooling and one fully connected layer.

    Layers: ``norm``, ``conv1``, ``bn1``, ``relu1``, ``layer1.0`` … ``layer3.{n-1}`` (each with
    ``conv1``, ``bn1``, ``relu1``, ``conv2``, ``bn2``, ``relu2``), ``avgpool``, ``fc`` (logits).
    Input: N×3×32×32 in [0, 1].

    Args:
        depth: 6n+2; 20, 32, 44 (default, the depth Zhao et al. used), 56, 110.
        num_classes: outputs of ``fc``.
        mean, std: per-channel normalisation constants (CIFAR-10's by default).

    Examples:
        >>> ResNetCifar(depth=20)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        depth: int = 44,
        num_classes: int = 10,
        *,
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n ≥ 1 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.norm = Normalize(mean, std)
        self.conv1 = nn.Conv2d(len(mean), 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        self.layer1 = self._stage(16, 16, n, stride=1)
        self.layer2 = self._stage(16, 32, n, stride=2)
        self.layer3 = self._stage(32, 64, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    @staticmethod
    def _stage(in_channels: int, out_channels: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_channels, out_channels, stride)]
        blocks += [BasicBlock(out_channels, out_channels) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(self.norm(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))
