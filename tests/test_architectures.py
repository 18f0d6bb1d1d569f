"""Every registered detector on architectures beyond the zoo's: a small vision transformer
(token sequences, a ModuleDict of encoder blocks, attention layers with tuple outputs and a
projection the forward never calls) and a residual CNN with BatchNorm, both written here, and
that CNN as a `torch.export` program read back from its ``.pt2`` file."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

from tiny_world import make_world, train_on_world
from tripwire.data.base import ImageSet
from tripwire.detectors import create_detector, list_detectors
from tripwire.errors import InvalidInputError
from tripwire.features import extract_features, layers_that_run, pool
from tripwire.models.user import load_model_file

# Detectors that need modules this transformer lacks, and say so: guided back-propagation and
# fingerprints need nn.ReLU-like modules (the encoder layers call F.relu), Gram needs maps.
CANNOT_FIT_VIT = {"feature-response", "fingerprints", "gram"}
# Guided back-propagation hooks nn.ReLU modules, which a program's layers are not.
CANNOT_FIT_PROGRAM = {"feature-response"}
SMALL = {
    "daain": {"n_points": 64, "hidden": 32, "epochs": 10},
    "kd_bu": {"mc_passes": 5},
    "odin": {"epsilons": (0.0, 0.002), "validation_size": 100},
}


class TinyViT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, 16, 4, stride=4)  # 12×12 → 3×3 tokens
        self.cls = nn.Parameter(torch.zeros(1, 1, 16))
        self.pos = nn.Parameter(torch.zeros(1, 10, 16))
        block = functools.partial(
            nn.TransformerEncoderLayer, 16, 2, 32, dropout=0.0, batch_first=True
        )
        self.blocks = nn.ModuleDict({"b0": block(), "b1": block()})
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(x), -1, -1), t], 1) + self.pos
        for block in self.blocks.values():
            t = block(t)
        return self.head(self.norm(t[:, 0]))


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width),
        )  # fmt: skip
        self.out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x + self.body(x))


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.stages = nn.ModuleList([Residual(8), nn.Sequential(nn.MaxPool2d(2), Residual(8))])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.fc(self.pool(x).flatten(1))


@functools.cache
def _trained(kind: str) -> tuple[nn.Module, ImageSet]:
    if kind == "resnet-program":
        model, train = _trained("resnet")
        return _exported(model, train.as_float()[:2]), train
    torch.manual_seed(0)
    model = TinyViT() if kind == "vit" else TinyResNet()
    x, y = train_on_world(model, 300, 40)
    assert (model(x).argmax(1) == y).float().mean() > 0.9  # 0.94–0.97 by thread count
    return model, ImageSet("world", x, y)


def _exported(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """`model` saved as a torch.export program with a dynamic batch size and loaded back."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pt2"
        batch = {0: torch.export.Dim.DYNAMIC}
        torch.export.save(torch.export.export(model, (example,), dynamic_shapes=(batch,)), path)
        return load_model_file(path)


@pytest.mark.parametrize("kind", ["vit", "resnet", "resnet-program"])
@pytest.mark.parametrize("name", list_detectors())
def test_every_detector_fits_or_says_why_not(kind: str, name: str) -> None:
    model, train = _trained(kind)
    det = create_detector(name, **SMALL.get(name, {}))
    x = train.as_float()
    anomalies = (x[:200] + 0.3 * torch.randn_like(x[:200]).sign()).clamp(0, 1)
    if (kind == "vit" and name in CANNOT_FIT_VIT) or (
        kind == "resnet-program" and name in CANNOT_FIT_PROGRAM
    ):
        with pytest.raises(InvalidInputError):
            det.fit(model, train, anomalies=anomalies if det.needs_anomalies else None)
        return
    det.fit(model, train, anomalies=anomalies if det.needs_anomalies else None)
    scores = det.score(model, torch.cat([make_world(50, seed=2)[0], torch.rand(50, 1, 12, 12)]))
    assert scores.shape == (100,) and torch.isfinite(scores).all()


def test_tokens_are_pooled_over_the_sequence() -> None:
    tokens = torch.randn(4, 10, 16)  # N×T×D
    assert torch.equal(pool(tokens, "mean"), tokens.mean(dim=1))
    assert pool(tokens, "meanstd").shape == (4, 32)


def test_a_layer_the_forward_never_calls_is_a_typed_error() -> None:
    model, train = _trained("vit")
    x = train.as_float()[:4]
    assert "blocks.b0.self_attn.out_proj" not in layers_that_run(model, x)
    with pytest.raises(InvalidInputError, match="did not run in the forward pass"):
        extract_features(model, [x], ["blocks.b0.self_attn.out_proj"])
