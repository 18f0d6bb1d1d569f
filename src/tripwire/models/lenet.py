"""LeNet-5 (LeCun et al., 1998) for 28×28 grey digits, as used by Zhao et al. for MNIST."""

from __future__ import annotations

import torch
from torch import nn

from tripwire.models.normalize import Normalize

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)


class LeNet5(nn.Module):
    """LeNet-5: two 5×5 conv layers and three fully connected layers, ReLU and max-pooling.

    conv1 1→6 5×5 (pad 2) → relu1 → pool1 → conv2 6→16 5×5 → relu2 → pool2 → fc1 400→120 →
    relu3 → drop1 → fc2 120→84 → relu4 → drop2 → fc3 84→`num_classes` (logits).
    Input: N×1×28×28 in [0, 1]; normalisation (MNIST mean/std) is the first layer, `norm`.
    ``conv1`` (with its own ``relu1``) is the paper's most discriminative layer for LeNet.

    Args:
        num_classes: outputs of ``fc3``.
        width: channel multiplier for conv1/conv2 (1 = the paper's 6 and 16 channels).
        dropout: dropout probability after fc1 and fc2 (0 disables; KD+BU's MC-dropout
            needs > 0).
        mean, std: per-channel normalisation constants.

    Examples:
        >>> LeNet5()(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        width: int = 1,
        dropout: float = 0.0,
        mean: tuple[float, ...] = MNIST_MEAN,
        std: tuple[float, ...] = MNIST_STD,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        c1, c2 = 6 * width, 16 * width
        self.norm = Normalize(mean, std)
        self.conv1 = nn.Conv2d(1, c1, 5, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(c2 * 5 * 5, 120)
        self.relu3 = nn.ReLU()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.drop2 = nn.Dropout(dropout)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(self.norm(x))))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.drop1(self.relu3(self.fc1(self.flatten(x))))
        x = self.drop2(self.relu4(self.fc2(x)))
        return self.fc3(x)
