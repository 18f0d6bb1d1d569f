"""Shared test fixtures: the data directory, MNIST, and a trained LeNet-5 from the model zoo.

`lenet_mnist` is trained once per test session through the zoo into a session temporary cache
(or reused from `$TRIPWIRE_CACHE` when a card with the same recipe is stored there).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """`$TRIPWIRE_DATA`, else `<repo>/../shared/data`."""
    env = os.environ.get("TRIPWIRE_DATA")
    return Path(env) if env else (REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def mnist_train(data_dir: Path):
    from tripwire.data import load_source

    return load_source("mnist", "train", data_dir)


@pytest.fixture(scope="session")
def mnist_test(data_dir: Path):
    from tripwire.data import load_source

    return load_source("mnist", "test", data_dir)


def _placeholder_lenet(mnist_train) -> nn.Module:
    """Temporary stand-in until the zoo lands: one epoch of a LeNet-5, seeded."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    labels = mnist_train.require_labels()
    perm = torch.randperm(len(mnist_train), generator=g)
    for start in range(0, len(perm), 128):
        idx = perm[start : start + 128]
        loss = nn.functional.cross_entropy(model(mnist_train.as_float(idx)), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def lenet_mnist(data_dir: Path, mnist_train, tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    """The zoo's LeNet-5 for MNIST, trained (seed 0), in eval mode."""
    try:
        from tripwire.models.zoo import load_model
    except ImportError:
        return _placeholder_lenet(mnist_train)
    cache = os.environ.get("TRIPWIRE_CACHE") or tmp_path_factory.mktemp("tripwire-cache")
    return load_model("lenet-mnist", data_dir=data_dir, cache_dir=cache, seed=0)
