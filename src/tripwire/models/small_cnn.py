"""A small CNN for scikit-learn's 8×8 digits: the embedded default classifier of `tripwire demo`."""

from __future__ import annotations

import torch
from torch import nn

from tripwire.models.normalize import Normalize

# Mean / std of sklearn's digits rescaled to [0, 1] (pixel values 0…16 divided by 16).
DIGITS8_MEAN = (0.3053,)
DIGITS8_STD = (0.3760,)


class SmallCNN(nn.Module):
    """Two 3×3 conv layers and two fully connected layers for 8×8 grey digits.

    norm → conv1 1→16 3×3 (pad 1) → relu1 → conv2 16→32 3×3 (pad 1) → relu2 → pool2 (8→4) →
    fc1 512→64 → relu3 → drop1 → fc2 64→`num_classes` (logits). Input N×1×8×8 in [0, 1].

    Args:
        num_classes: outputs of ``fc2``.
        dropout: dropout probability after fc1.
        mean, std: per-channel normalisation constants.

    Examples:
        >>> SmallCNN()(torch.rand(3, 1, 8, 8)).shape
        torch.Size([3, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        dropout: float = 0.0,
        mean: tuple[float, ...] = DIGITS8_MEAN,
        std: tuple[float, ...] = DIGITS8_STD,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.norm = Normalize(mean, std)
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.relu3 = nn.ReLU()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(self.norm(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.drop1(self.relu3(self.fc1(self.flatten(x))))
        return self.fc2(x)
