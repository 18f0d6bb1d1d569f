"""Feature extraction: hooks removed, mode and weights unchanged, pooling, layer listing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tripwire.errors import InvalidInputError
from tripwire.features import LayerTap, extract_features, list_layers, pool


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU())
        self.flatten = nn.Flatten()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(3 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.flatten(self.block(x))))


def test_list_layers_leaves_in_order_without_dropout_and_flatten() -> None:
    assert list_layers(Net()) == ["block.0", "block.1", "block.2", "fc"]
    assert list_layers(Net(), leaves_only=False) == ["block", "block.0", "block.1", "block.2", "fc"]


def test_pooling_values() -> None:
    a = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    torch.testing.assert_close(pool(a, "mean"), torch.tensor([[5.5, 17.5]]))
    torch.testing.assert_close(pool(a, "max"), torch.tensor([[11.0, 23.0]]))
    ms = pool(a, "meanstd")
    torch.testing.assert_close(ms[:, :2], torch.tensor([[5.5, 17.5]]))
    torch.testing.assert_close(ms[:, 2:], a.flatten(2).std(dim=2, unbiased=False))
    f = a.flatten(2)[0].double()  # C × positions
    torch.testing.assert_close(pool(a, "gram"), (f @ f.T).sum(dim=1, keepdim=True).T)
    assert pool(a, "none").shape == (1, 24)
    dense = torch.randn(5, 7)
    assert pool(dense, "mean") is dense
    with pytest.raises(ValueError):
        pool(a, "median")  # type: ignore[arg-type]


def test_extract_matches_manual_forward_and_leaves_model_as_it_was() -> None:
    torch.manual_seed(0)
    net = Net()
    net.train()
    state = {k: v.clone() for k, v in net.state_dict().items()}  # BN running stats included
    x = torch.rand(10, 1, 6, 6)
    feats = extract_features(net, x.split(3), ["block.2", "fc"], pooling="mean")
    assert net.training and net.block[1].training  # mode restored
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k  # BN statistics untouched: eval mode was used
    assert all(not m._forward_hooks for m in net.modules())
    net.eval()
    with torch.no_grad():
        expected_logits = net(x)
        expected_relu = net.block(x).mean(dim=(2, 3))
    torch.testing.assert_close(feats.logits, expected_logits)
    torch.testing.assert_close(feats.layers["block.2"], expected_relu)
    torch.testing.assert_close(feats.layers["fc"], expected_logits)
    assert torch.equal(feats.predicted, expected_logits.argmax(1))


def test_mixed_modes_restored_per_module() -> None:
    net = Net().train()
    net.block[1].eval()  # a frozen BatchNorm inside a training model
    extract_features(net, [torch.rand(2, 1, 6, 6)], ["fc"])
    assert net.training and not net.block[1].training


def test_hooks_removed_even_when_forward_fails() -> None:
    net = Net()
    with pytest.raises(RuntimeError):
        extract_features(net, [torch.rand(2, 2, 6, 6)], ["block.0"])  # wrong channel count
    assert all(not m._forward_hooks for m in net.modules())


def test_unknown_layer_names_the_available_ones() -> None:
    with pytest.raises(InvalidInputError, match=r"block\.0"):
        LayerTap(Net(), ["conv9"])


def test_tap_follows_the_callers_grad_mode() -> None:
    net = Net().eval()
    x = torch.rand(2, 1, 6, 6, requires_grad=True)
    with LayerTap(net, ["block.2"]) as tap:
        net(x)
    tap.outputs["block.2"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad(), LayerTap(net, ["block.2"]) as tap:
        net(x)
    assert not tap.outputs["block.2"].requires_grad
