"""Zoo weights shipped inside the package (`tripwire.models.stored`): store, load first, verify."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from tripwire.cli import app
from tripwire.errors import FormatError
from tripwire.models import ModelNotTrainedError, load_model, read_card, train_model, weights_digest
from tripwire.models.lenet import LeNet5
from tripwire.models.stored import (
    STORED_ENV,
    CorruptStoredModelError,
    load_stored,
    read_stored_card,
    stored_dir,
    stored_paths,
    write_stored,
)
from tripwire.models.weights import round_to_half
from tripwire.models.zoo import store_model

X = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two caches holding cnn-digits8 seed 0 trained for 1 and for 2 epochs (other weights)."""
    one, two = tmp_path_factory.mktemp("cache1"), tmp_path_factory.mktemp("cache2")
    train_model("cnn-digits8", epochs=1, cache_dir=one, progress=False)
    train_model("cnn-digits8", epochs=2, cache_dir=two, progress=False)
    return one, two


def test_store_then_load_uses_the_stored_weights_before_the_cache(
    caches: tuple[Path, Path], tmp_path: Path
) -> None:
    one, two = caches
    stored = tmp_path / "stored"
    weights, card_path = store_model("cnn-digits8", seed=0, cache_dir=one, stored_dir=stored)
    assert (weights.name, card_path.name) == (
        "cnn-digits8-seed0.safetensors",
        "cnn-digits8-seed0.json",
    )
    card = json.loads(card_path.read_text())
    cached = read_card("cnn-digits8", 0, one)
    assert card["weights_digest"] == cached["weights_digest"]
    assert card["test_accuracy"] == cached["test_accuracy"] and len(card["weights_sha256"]) == 64
    # the cache `two` holds other weights; the stored ones win
    model = load_model("cnn-digits8", cache_dir=two, stored_dir=stored, train_if_missing=False)
    reference = load_model("cnn-digits8", cache_dir=one, stored_dir=tmp_path / "none")
    other = load_model("cnn-digits8", cache_dir=two, stored_dir=tmp_path / "none")
    assert not model.training
    assert weights_digest(model) == cached["weights_digest"] != weights_digest(other)
    assert torch.equal(model(X), reference(X))
    # no cache at all: the stored weights alone are enough, nothing is trained
    empty = tmp_path / "empty-cache"
    again = load_model("cnn-digits8", cache_dir=empty, stored_dir=stored, train_if_missing=False)
    assert torch.equal(again(X), reference(X)) and not empty.exists()


def test_stored_dir_comes_from_the_argument_the_environment_or_the_package(
    caches: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(STORED_ENV, raising=False)
    assert stored_dir() == Path(__import__("tripwire").__file__).parent / "models" / "stored"
    monkeypatch.setenv(STORED_ENV, str(tmp_path / "env"))
    assert stored_dir() == tmp_path / "env" and stored_dir(tmp_path / "arg") == tmp_path / "arg"
    store_model("cnn-digits8", cache_dir=caches[0])  # into $TRIPWIRE_STORED_MODELS
    assert read_stored_card("cnn-digits8", 0) is not None
    assert read_stored_card("cnn-digits8", 1) is None  # only seed 0 is stored
    with pytest.raises(ModelNotTrainedError, match="neither stored"):
        load_model("cnn-digits8", seed=1, cache_dir=tmp_path / "c", train_if_missing=False)


def test_corrupt_stored_files_are_a_clear_error(caches: tuple[Path, Path], tmp_path: Path) -> None:
    store_model("cnn-digits8", cache_dir=caches[0], stored_dir=tmp_path)
    weights, card_path = stored_paths("cnn-digits8", 0, tmp_path)
    raw = bytearray(weights.read_bytes())
    raw[-10] ^= 0x40  # one flipped bit in the last tensor
    weights.write_bytes(bytes(raw))
    kwargs = {"cache_dir": caches[1], "stored_dir": tmp_path, "train_if_missing": False}
    with pytest.raises(CorruptStoredModelError, match=r"SHA-256 .* differs.*reinstall"):
        load_model("cnn-digits8", **kwargs)
    # a file whose SHA-256 was updated but whose weights differ from the digest
    card = json.loads(card_path.read_text())
    card["weights_sha256"] = hashlib.sha256(bytes(raw)).hexdigest()
    card_path.write_text(json.dumps(card))
    with pytest.raises(CorruptStoredModelError, match="weights digest"):
        load_model("cnn-digits8", **kwargs)
    card_path.write_text("{not json")
    with pytest.raises(CorruptStoredModelError, match="not a readable model card"):
        load_model("cnn-digits8", **kwargs)
    card_path.write_text(json.dumps({"name": "cnn-digits8", "seed": 0}))
    with pytest.raises(CorruptStoredModelError, match="needs"):
        load_model("cnn-digits8", **kwargs)
    store_model("cnn-digits8", cache_dir=caches[0], stored_dir=tmp_path)
    weights.unlink()
    with pytest.raises(CorruptStoredModelError, match="missing"):
        load_model("cnn-digits8", **kwargs)
    assert issubclass(CorruptStoredModelError, FormatError)


def test_store_refuses_untrained_models(tmp_path: Path) -> None:
    with pytest.raises(ModelNotTrainedError, match="tripwire train cnn-digits8"):
        store_model("cnn-digits8", cache_dir=tmp_path / "cache", stored_dir=tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_half_precision_stored_weights_round_trip(tmp_path: Path) -> None:
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = LeNet5()
    rounded = round_to_half(copy.deepcopy(model))
    assert weights_digest(rounded) != weights_digest(model)
    card = {"name": "lenet-mnist", "seed": 4, "weights_digest": weights_digest(rounded)}
    card |= {"test_accuracy": 0.5, "recipe": {}}
    weights, _ = write_stored(model, card, tmp_path, half=True)
    with safe_open(str(weights), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118
    loaded = LeNet5()
    assert (
        load_stored(loaded, "lenet-mnist", 4, tmp_path)["weights_digest"] == card["weights_digest"]
    )
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded.eval()(x), rounded.eval()(x))
    with pytest.raises(FormatError, match="differs"):  # a card for other weights is refused
        write_stored(LeNet5(), {**card, "seed": 5}, tmp_path, half=True)
    assert read_stored_card("lenet-mnist", 5, tmp_path) is None


def test_cli_models_store_and_list(caches: tuple[Path, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["models", "store", "cnn-digits8", "--cache-dir", str(caches[0])]
    result = runner.invoke(app, [*args, "--stored-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "stored cnn-digits8 (seed 0" in result.output
    assert read_stored_card("cnn-digits8", 0, tmp_path) is not None
    missing = runner.invoke(app, [*args, "--seed", "7", "--stored-dir", str(tmp_path)])
    assert missing.exit_code != 0 and isinstance(missing.exception, ModelNotTrainedError)
