"""`tripwire train` and `tripwire models list`, also of a training run in progress."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tripwire.cli import app
from tripwire.locking import exclusive_lock
from tripwire.models import read_card
from tripwire.models.checkpoint import TrainingState, save_checkpoint
from tripwire.models.zoo import (
    CHECKPOINT_DIR,
    TrainingInProgressError,
    _run_lock_path,
    model_dir,
    train_model,
)

runner = CliRunner()


def test_train_stores_and_models_list_shows_it(tmp_path: Path) -> None:
    before = runner.invoke(app, ["models", "list", "--cache-dir", str(tmp_path)])
    assert before.exit_code == 0, before.output
    assert "lenet-mnist" in before.output and "yes" not in before.output
    args = ["-q", "train", "cnn-digits8", "--epochs", "1", "--cache-dir", str(tmp_path)]
    threads = torch.get_num_threads()
    try:
        result = runner.invoke(app, [*args, "--threads", "1"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    card = read_card("cnn-digits8", 0, tmp_path)
    assert card is not None and card["recipe"]["epochs"] == 1
    assert f"{card['test_accuracy']:.2%}" in result.output
    assert "weights.safetensors" in result.output
    again = runner.invoke(app, args)
    assert "already trained" in again.output
    after = runner.invoke(app, ["models", "list", "--cache-dir", str(tmp_path)])
    assert "yes" in after.output and f"{card['test_accuracy']:.2%}" in after.output


def test_train_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "lenet-cifar", "--cache-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "known zoo models" in str(result.exception)


def test_models_list_tells_a_running_training_from_an_interrupted_one(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(
        model_dir("cnn-digits8", 0, tmp_path) / CHECKPOINT_DIR,
        model=model,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.StepLR(optimizer, 1),
        generator=torch.Generator().manual_seed(0),
        state=TrainingState(1, [{"epoch": 1, "test_accuracy": 0.5}], 3.0, {"epochs": 4}),
    )

    def row() -> str:
        listed = runner.invoke(
            app, ["models", "list", "--cache-dir", str(tmp_path)], env={"COLUMNS": "200"}
        )
        assert listed.exit_code == 0, listed.output
        return next(line for line in listed.output.splitlines() if "cnn-digits8" in line)

    assert "interrupted after epoch 1/4" in row() and "50.00% so far" in row()
    with exclusive_lock(_run_lock_path("cnn-digits8", 0, tmp_path)):  # as a running train holds
        assert "training: epoch 1/4" in row()
        with pytest.raises(TrainingInProgressError, match="being trained by another process"):
            train_model("cnn-digits8", cache_dir=tmp_path, progress=False)
