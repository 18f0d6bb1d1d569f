"""`tripwire train` and `tripwire models list`."""

from __future__ import annotations

from pathlib import Path

import torch
from typer.testing import CliRunner

from tripwire.cli import app
from tripwire.models import read_card

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
    assert "known models" in str(result.exception)
