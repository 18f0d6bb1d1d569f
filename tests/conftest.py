"""Shared test fixtures: the data directory, MNIST, and a trained LeNet-5 from the model zoo.

`lenet_mnist` is trained once per test session through the zoo into a session temporary cache
(or reused from the user's cache when a card with the same recipe is stored there).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from torch import nn

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def working_folder_stays_clean() -> Iterator[None]:
    """Tests write into their temporary folders: a file left in the working folder is an error."""
    cwd = Path.cwd()
    before = set(os.listdir(cwd))
    yield
    left = sorted(n for n in set(os.listdir(cwd)) - before if not n.startswith("."))
    assert not left, f"tests left {left} in {cwd}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that read the data directory (through `data_dir`) are marked ``data``: ``make
    test-fast`` leaves them out."""
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """`$TRIPWIRE_DATA`, else `<repo>/../shared/data`. Absent: the test is skipped with the
    reason, or fails where `$TRIPWIRE_REQUIRE_DATA` is set (as `make test` sets it)."""
    env = os.environ.get("TRIPWIRE_DATA")
    path = Path(env) if env else (REPO.parent / "shared" / "data")
    if not path.is_dir():
        reason = f"no data directory at {path} (set TRIPWIRE_DATA)"
        if os.environ.get("TRIPWIRE_REQUIRE_DATA"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def mnist_train(data_dir: Path):
    from tripwire.data import load_source

    return load_source("mnist", "train", data_dir)


@pytest.fixture(scope="session")
def mnist_test(data_dir: Path):
    from tripwire.data import load_source

    return load_source("mnist", "test", data_dir)


@pytest.fixture(scope="session")
def lenet_mnist(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    """The zoo's LeNet-5 for MNIST (seed 0), in eval mode.

    Reused from the user's cache (`$TRIPWIRE_CACHE`, else ~/.cache/tripwire) when a model
    trained with the zoo's current recipe is stored there (its weights digest is checked);
    otherwise trained once per session into a temporary cache.
    """
    from tripwire.errors import TripwireError
    from tripwire.models.zoo import load_model, read_card, recipe_matches
    from tripwire.paths import cache_dir

    user_cache = cache_dir()
    try:
        card = read_card("lenet-mnist", 0, user_cache)
        if card is not None and recipe_matches(card):
            return load_model("lenet-mnist", cache_dir=user_cache, train_if_missing=False)
    except TripwireError as e:  # a damaged user cache: train afresh instead
        warnings.warn(f"not reusing the cached lenet-mnist: {e}", stacklevel=1)
    cache = tmp_path_factory.mktemp("tripwire-cache")
    return load_model("lenet-mnist", data_dir=data_dir, cache_dir=cache, seed=0, progress=False)


@pytest.fixture(scope="session")
def msp_digits_detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder written by `tripwire fit --model cnn-digits8 --detector msp` (no data files
    needed), fitted once per session, for the commands that load a saved detector."""
    from typer.testing import CliRunner

    from tripwire.cli import app

    det = tmp_path_factory.mktemp("msp-digits") / "det"
    fitted = CliRunner().invoke(
        app, ["fit", "--model", "cnn-digits8", "--detector", "msp", "--out", str(det)]
    )
    assert fitted.exit_code == 0, fitted.output
    return det
