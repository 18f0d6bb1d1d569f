"""A tiny seeded world for fast detector tests: three classes of 1×12×12 images (a bright blob in
one of three places, plus noise) and a small CNN that learns them in about a second."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from tripwire.data.base import ImageSet
from tripwire.detectors import Detector

SHAPE = (1, 12, 12)
CENTRES = ((3, 3), (3, 8), (8, 5))


def make_world(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n images of 3 classes: a Gaussian blob at the class's centre plus noise, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    ii, jj = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    centres = torch.tensor(CENTRES, dtype=torch.float32)[y]
    ci = centres[:, 0].view(-1, 1, 1) + torch.randn(n, 1, 1, generator=g) * 0.5
    cj = centres[:, 1].view(-1, 1, 1) + torch.randn(n, 1, 1, generator=g) * 0.5
    blob = torch.exp(-((ii - ci) ** 2 + (jj - cj) ** 2) / 4.0)
    x = (0.8 * blob + 0.1 * torch.rand(n, 12, 12, generator=g)).clamp(0, 1)
    return x.unsqueeze(1), y


class TinyNet(nn.Module):
    """conv → relu → pool → conv → relu → fc → dropout → fc (dropout for MC-dropout detectors).

    With ``smooth``, the penultimate activation is a softplus instead of a ReLU: positive like a
    ReLU's but without dead units, so the penultimate features have a full-rank covariance."""

    def __init__(self, smooth: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(8 * 6 * 6, 16)
        self.relu3: nn.Module = nn.Softplus() if smooth else nn.ReLU()
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool1(self.relu1(self.conv1(x)))
        h = self.flatten(self.relu2(self.conv2(h)))
        return self.fc2(self.drop(self.relu3(self.fc1(h))))


@functools.cache
def train_on_world(model: nn.Module, n: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train `model` (full-batch Adam; dropout draws from torch's global generator, which the
    caller seeds) on the world's first `n` images (seed 1); eval mode afterwards. Returns those
    images and labels."""
    x, y = make_world(n, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return x, y


def _trained_state(smooth: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = TinyNet(smooth)
    train_on_world(model, 900, 60)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def trained_world(smooth: bool = False) -> tuple[TinyNet, ImageSet, ImageSet]:
    """A fresh trained TinyNet (eval mode; the same weights every call), train and val sets."""
    model = TinyNet(smooth)
    model.load_state_dict(_trained_state(smooth))
    x, y = make_world(900, seed=1)
    return (
        model.eval(),
        ImageSet("world-train", x[:700], y[:700]),
        ImageSet("world-val", x[700:], y[700:]),
    )


def with_a_rare_class(model: nn.Module, data: ImageSet, rare: int = 2, keep: int = 4) -> ImageSet:
    """`data` with all but `keep` of the images `model` predicts as class `rare` left out (4 by
    default: fewer than the 5 a per-class SVM of the uniform detectors needs)."""
    with torch.no_grad():
        pred = model(data.as_float()).argmax(1)
    kept = torch.cat([torch.nonzero(pred != rare).flatten(), torch.nonzero(pred == rare)[:keep, 0]])
    labels = None if data.labels is None else data.labels[kept]
    return ImageSet(f"{data.name}-rare-{rare}", data.images[kept], labels)


# Hyper-parameters that suit the tiny world (a detector not listed uses its defaults).
CONTRACT_PARAMS: dict[str, dict[str, Any]] = {
    "uniform": {"layer": "auto"},
    "daain": {"key": "contract-test-key", "n_points": 96, "hidden": 32, "epochs": 20},
    "odin": {"validation_size": 200, "epsilons": (0.0, 0.001, 0.005)},
    "kd_bu": {"mc_passes": 10},
    # windows large enough for 12×12 maps
    "feature-response": {"window": 7},
    "fingerprints": {"n_candidates": 500},
}


def contract_world() -> dict[str, Any]:
    """The world every registered detector is checked on: the trained TinyNet, its train and
    val sets, 300 new ID test images, 200 uniform-noise images (the shift) and, for detectors
    that fit on known anomalies, a blind ±0.3 L∞ perturbation of the training images."""
    model, train, val = trained_world()
    x_test, y_test = make_world(300, seed=2)
    accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy > 0.95, accuracy
    g = torch.Generator().manual_seed(3)
    x = train.as_float()
    sign = torch.randint(0, 2, x.shape, generator=g) * 2 - 1
    return {
        "model": model,
        "train": train,
        "val": val,
        "test": x_test,
        "shift": torch.rand(200, *SHAPE, generator=g),
        "anomalies": (x + 0.3 * sign).clamp(0, 1),
    }


def fit_on_world(det: Detector, world: dict[str, Any]) -> Detector:
    """`det` fitted on the contract world's training images (and its anomalies if it needs
    them)."""
    anomalies = world["anomalies"] if det.needs_anomalies else None
    return det.fit(world["model"], world["train"], anomalies=anomalies)
