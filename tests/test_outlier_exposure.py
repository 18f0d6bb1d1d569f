"""Outlier Exposure: the loss against its formula, fine-tuning on a tiny problem, the zoo twin
(card, cache) and `tripwire train --outlier-exposure`."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from tripwire.cli import app
from tripwire.data.base import ImageSet
from tripwire.errors import DataError, InvalidInputError
from tripwire.models import zoo
from tripwire.models.digest import weights_digest
from tripwire.models.outlier_exposure import (
    fine_tune_outlier_exposure,
    load_outliers,
    mean_max_softmax,
    outlier_exposure_loss,
    uniform_cross_entropy,
)
from tripwire.models.training import evaluate_accuracy, train_classifier

runner = CliRunner()


def test_uniform_outputs_give_log_k() -> None:
    for k in (2, 10, 37):
        logits = torch.full((5, k), 3.7)
        assert float(uniform_cross_entropy(logits)) == pytest.approx(math.log(k), rel=1e-6)


def test_loss_is_the_formula_on_a_hand_example() -> None:
    logits_in = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    labels = torch.tensor([0, 2])
    logits_out = torch.tensor([[1.0, 1.0, 1.0], [3.0, 0.0, 0.0]])
    p_in = np.exp(logits_in.numpy()) / np.exp(logits_in.numpy()).sum(1, keepdims=True)
    ce = -np.mean(np.log(p_in[[0, 1], [0, 2]]))
    log_p_out = logits_out.numpy() - np.log(np.exp(logits_out.numpy()).sum(1, keepdims=True))
    oe = np.mean(-log_p_out.mean(1))
    assert oe > math.log(3)  # the second outlier is not uniform
    expected = ce + 0.5 * oe
    got = outlier_exposure_loss(logits_in, labels, logits_out)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert float(outlier_exposure_loss(logits_in, labels, logits_out, weight=0.0)) == (
        pytest.approx(float(F.cross_entropy(logits_in, labels)), rel=1e-6)
    )


def test_loss_rejects_bad_input() -> None:
    with pytest.raises(InvalidInputError, match="do not match"):
        outlier_exposure_loss(
            torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.zeros(2, 4)
        )
    with pytest.raises(InvalidInputError, match="λ"):
        outlier_exposure_loss(
            torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.zeros(2, 3), -1
        )
    with pytest.raises(InvalidInputError, match="N×K"):
        uniform_cross_entropy(torch.zeros(4))


def _blocks(n: int, seed: int) -> ImageSet:
    """3 classes of 1×6×6 images: a bright 3×3 block in one of three corners, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 0.1 * torch.rand(n, 1, 6, 6, generator=g)
    for k, (r, c) in enumerate([(0, 0), (0, 3), (3, 0)]):
        x[y == k, :, r : r + 3, c : c + 3] += 0.8
    return ImageSet(f"blocks-{seed}", x.clamp(0, 1), y)


def _mlp(num_classes: int = 3, pixels: int = 36) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(pixels, 32), nn.ReLU(), nn.Linear(32, num_classes))


@pytest.mark.slow  # about 2 s on an idle machine
def test_fine_tuning_lowers_outlier_confidence_and_keeps_accuracy() -> None:
    train, test = _blocks(600, 0), _blocks(300, 1)
    torch.manual_seed(0)
    model = _mlp()
    train_classifier(
        model,
        train,
        test,
        epochs=4,
        batch_size=32,
        lr=1e-2,
        seed=0,
        augment_shift=0,
        progress=False,
    )
    g = torch.Generator().manual_seed(2)
    outliers = ImageSet("two-blocks", torch.zeros(400, 1, 6, 6))  # class 0's block + another
    outliers.images[:, :, :3, :3] = 0.9
    outliers.images[:, :, 3:, 3:] = 0.5 + 0.5 * torch.rand(400, 1, 3, 3, generator=g)
    accuracy_before = evaluate_accuracy(model, test)
    msp_before = mean_max_softmax(model, outliers)
    assert accuracy_before > 0.95 and msp_before > 0.6
    result = fine_tune_outlier_exposure(
        model,
        train,
        outliers,
        test,
        epochs=2,
        batch_size=32,
        lr=3e-3,
        seed=0,
        augment_shift=0,
        progress=False,
    )
    msp_after = mean_max_softmax(model, outliers)
    assert msp_after < 0.5 * msp_before  # 1/3 would be uniform
    assert result.test_accuracy >= accuracy_before - 0.01
    assert len(result.history) == 2 and result.history[-1]["outlier_msp"] < msp_before
    assert not model.training


def test_fine_tuning_is_seeded_and_checks_shapes() -> None:
    train, test = _blocks(90, 0), _blocks(30, 1)
    outliers = ImageSet("noise", torch.rand(40, 1, 6, 6))
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        model = _mlp()
        fine_tune_outlier_exposure(model, train, outliers, test, epochs=1, seed=5, progress=False)
        weights.append(weights_digest(model))
    assert weights[0] == weights[1]
    with pytest.raises(DataError, match="load_outliers"):
        fine_tune_outlier_exposure(
            _mlp(), train, ImageSet("big", torch.rand(4, 1, 8, 8)), test, progress=False
        )


def test_load_outliers_conforms_a_npz_and_rejects_unknown_names(tmp_path: Path) -> None:
    path = tmp_path / "rgb.npz"
    np.savez(path, x=np.full((7, 16, 16, 3), 255, np.uint8), y=np.arange(7))
    got = load_outliers(path, (1, 8, 8))
    assert got.image_shape == (1, 8, 8) and got.labels is None and len(got) == 7
    assert torch.allclose(got.images, torch.ones(7, 1, 8, 8))
    with pytest.raises(DataError, match="unknown data source"):
        load_outliers("no-such-set", (1, 8, 8))


def test_zoo_registers_the_lenet_twin() -> None:
    recipe = zoo.get_recipe("lenet-mnist-oe")
    assert recipe.base == "lenet-mnist" and recipe.outlier_set == "font-letters-kz"
    assert recipe.outlier_weight == 0.5 and recipe.builder is zoo.get_recipe("lenet-mnist").builder
    assert zoo.outlier_exposure_name("lenet-mnist") == "lenet-mnist-oe"
    with pytest.raises(zoo.UnknownModelError, match="no Outlier Exposure twin"):
        zoo.outlier_exposure_name("cnn-digits8")
    # the plain recipes' hyper-parameters (and so the stored cards) are unchanged
    assert "outlier_set" not in zoo.get_recipe("lenet-mnist").hyperparameters()


def _digit_mlp(num_classes: int = 10) -> nn.Module:
    return _mlp(num_classes, 64)


@pytest.fixture
def tiny_zoo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fast plain recipe (an MLP on the 8×8 digits) and its OE twin on a noise .npz."""
    outliers = tmp_path / "noise.npz"
    rng = np.random.default_rng(0)
    np.savez(outliers, x=(255 * rng.random((300, 16, 16))).astype(np.uint8))
    plain = dataclasses.replace(
        zoo.get_recipe("cnn-digits8"), name="mlp-digits", builder=_digit_mlp, epochs=3, lr=1e-2
    )
    monkeypatch.setitem(zoo._RECIPES, "mlp-digits", plain)
    twin = zoo.outlier_exposure_twin("mlp-digits", str(outliers), epochs=1, lr=1e-3)
    monkeypatch.setitem(zoo._RECIPES, twin.name, twin)
    return outliers


@pytest.mark.slow
def test_twin_card_records_the_plain_model(tiny_zoo: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    model = zoo.load_model("mlp-digits-oe", cache_dir=cache, progress=False)  # trains both
    plain_card = zoo.read_card("mlp-digits", 0, cache)
    card = zoo.read_card("mlp-digits-oe", 0, cache)
    assert plain_card is not None and card is not None
    assert card["base_model"]["weights_digest"] == plain_card["weights_digest"]
    assert card["base_model"]["test_accuracy"] == pytest.approx(plain_card["test_accuracy"])
    assert card["weights_digest"] == weights_digest(model) != plain_card["weights_digest"]
    oe = card["outlier_exposure"]
    assert oe["outlier_set"] == str(tiny_zoo) and oe["lambda"] == 0.5 and oe["epochs"] == 1
    assert oe["outlier_data"]["n"] == 300
    assert oe["outlier_msp_after"] < oe["outlier_msp_before"]
    assert zoo.recipe_matches(card)
    assert (zoo.model_dir("mlp-digits-oe", 0, cache) / "weights.safetensors").is_file()
    again = zoo.load_model("mlp-digits-oe", cache_dir=cache, train_if_missing=False)
    assert weights_digest(again) == card["weights_digest"]


@pytest.mark.slow
def test_cli_outlier_exposure_option(tiny_zoo: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = ["-q", "train", "mlp-digits", "--outlier-exposure", str(tiny_zoo)]
    result = runner.invoke(app, [*args, "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    card = zoo.read_card("mlp-digits-oe", 0, cache)
    assert card is not None and card["outlier_exposure"]["outlier_set"] == str(tiny_zoo)
    assert "Outlier Exposure" in result.output and f"{card['test_accuracy']:.2%}" in result.output
    again = runner.invoke(app, [*args, "--cache-dir", str(cache)])
    assert "already trained" in again.output
    listing = runner.invoke(app, ["models", "list", "--cache-dir", str(cache)])
    assert "mlp-digits-oe" in listing.output and "lenet-mnist-oe" in listing.output
    bad = runner.invoke(app, ["train", "cnn-digits8", "--outlier-exposure", str(tiny_zoo)])
    assert bad.exit_code != 0 and "no Outlier Exposure twin" in str(bad.exception)
