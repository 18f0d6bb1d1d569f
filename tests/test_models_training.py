"""Real training through the zoo: LeNet-5 on MNIST and the small CNN on the 8×8 digits (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from tripwire.data import load_source
from tripwire.data.base import ImageSet
from tripwire.models import evaluate_accuracy, load_model, model_dir, read_card


@pytest.mark.slow
def test_lenet_mnist_reaches_99_percent(lenet_mnist: nn.Module, mnist_test: ImageSet) -> None:
    assert not lenet_mnist.training
    accuracy = evaluate_accuracy(lenet_mnist, mnist_test)
    assert accuracy >= 0.990, f"LeNet-5 test accuracy {accuracy:.4f} < 0.990"


@pytest.mark.slow
def test_cnn_digits8_reaches_95_percent(tmp_path: Path) -> None:
    model = load_model("cnn-digits8", cache_dir=tmp_path, progress=False)  # trains: not cached
    card = read_card("cnn-digits8", 0, tmp_path)
    assert card is not None and card["test_accuracy"] >= 0.95
    assert card["test_data"]["n"] == 450
    assert evaluate_accuracy(model, load_source("digits8", "test")) == card["test_accuracy"]
    assert not (model_dir("cnn-digits8", 0, tmp_path) / "checkpoint").exists()
