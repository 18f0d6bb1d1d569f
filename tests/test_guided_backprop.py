"""Guided back-propagation: a hand-computed case, in-place ReLUs, refusals, model untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tripwire.errors import InvalidInputError
from tripwire.guided_backprop import guided_backprop, guided_backprop_and_logits


def two_layer_net(inplace: bool = False) -> nn.Sequential:
    """x (2) → W1 (3×2) → ReLU → W2 (2×3), no biases, with hand-picked weights."""
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(2, 3, bias=False), nn.ReLU(inplace), nn.Linear(3, 2, bias=False)
    )
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 2.0], [1.0, 1.0]]))
        net[3].weight.copy_(torch.tensor([[2.0, 5.0, -1.0], [0.0, 1.0, 1.0]]))
    return net


X = torch.tensor([0.5, 0.2]).view(1, 1, 1, 2)


@pytest.mark.parametrize("inplace", [False, True])
def test_hand_computed_two_layer_net(inplace: bool) -> None:
    # Pre-activations f = W1 x = (0.3, −0.1, 0.7); R from logit 0 = W2[0] = (2, 5, −1).
    # Guided rule (f > 0)·(R > 0)·R = (2, 0, 0): unit 2 is off (f < 0), unit 3 has R < 0.
    # Input response = W1ᵀ (2, 0, 0) = (2, −2).
    net = two_layer_net(inplace)
    r = guided_backprop(net, X, target=0)
    torch.testing.assert_close(r, torch.tensor([2.0, -2.0]).view(1, 1, 1, 2))
    # Plain gradient keeps unit 3: W1ᵀ (2, 0, −1) = (1, −3) — and the hooks are gone.
    xg = X.clone().requires_grad_(True)
    net(xg)[0, 0].backward()
    torch.testing.assert_close(xg.grad, torch.tensor([1.0, -3.0]).view(1, 1, 1, 2))


def test_default_target_is_the_predicted_class() -> None:
    net = two_layer_net()
    # Logits: (2·0.3 − 0.7, 0 + 0.7) = (−0.1, 0.7) → class 1; R = W2[1] = (0, 1, 1) → (0, 0, 1)
    # after the rule → W1ᵀ (0, 0, 1) = (1, 1).
    r, logits = guided_backprop_and_logits(net, X)
    assert int(logits.argmax()) == 1
    torch.testing.assert_close(r, torch.tensor([1.0, 1.0]).view(1, 1, 1, 2))
    torch.testing.assert_close(guided_backprop(net, X, target=torch.tensor([1])), r)


def test_batch_rows_are_independent() -> None:
    net = two_layer_net()
    x = torch.rand(6, 1, 1, 2)
    r = guided_backprop(net, x, target=0)
    for i in range(6):
        torch.testing.assert_close(r[i : i + 1], guided_backprop(net, x[i : i + 1], target=0))


def test_model_untouched() -> None:
    net = two_layer_net(inplace=True).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    guided_backprop(net, torch.rand(4, 1, 1, 2))
    assert net.training and all(m.training for m in net.modules())
    assert all(p.grad is None for p in net.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


class FunctionalRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x.flatten(1))))  # escapes module hooks


def test_functional_relu_is_refused_and_cleaned_up() -> None:
    net = FunctionalRelu()
    with pytest.raises(InvalidInputError, match=r"nn\.ReLU"):
        guided_backprop(net, X)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    net(X)  # the model still runs normally afterwards


@pytest.mark.parametrize("act", [nn.Tanh(), nn.GELU(), nn.LeakyReLU()])
def test_other_activations_refused(act: nn.Module) -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 3), act, nn.Linear(3, 2))
    with pytest.raises(InvalidInputError, match="guided"):
        guided_backprop(net, X)


def test_no_relu_at_all_refused() -> None:
    with pytest.raises(InvalidInputError, match=r"nn\.ReLU"):
        guided_backprop(nn.Sequential(nn.Flatten(), nn.Linear(2, 2)), X)


def test_bad_target_refused() -> None:
    with pytest.raises(InvalidInputError, match="target"):
        guided_backprop(two_layer_net(), X, target=5)
    with pytest.raises(InvalidInputError, match="target"):
        guided_backprop(two_layer_net(), X, target=torch.tensor([0, 1]))
