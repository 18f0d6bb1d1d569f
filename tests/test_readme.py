"""The "Use your own model" page's commands, run as written on a small CNN of the test's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tripwire.data import load_source

PAGE = Path(__file__).resolve().parents[1] / "docs" / "own-model.md"

MYNET = """
import torch
from torch import nn


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10),
    )
"""


def _section_commands(title: str) -> list[str]:
    """The lines of the first ```bash block after the heading `title`."""
    text = PAGE.read_text()
    after = text[text.index(f"## {title}") :]
    block = after[after.index("```bash\n") + len("```bash\n") :]
    return [line for line in block[: block.index("```")].splitlines() if line.strip()]


def _digits(split: str) -> dict[str, np.ndarray]:
    data = load_source("digits8", split)
    return {"x": (data.as_float()[:, 0].numpy() * 255).astype(np.uint8), "y": data.labels.numpy()}


@pytest.mark.slow
def test_your_own_model_runs_as_written(tmp_path: Path) -> None:
    commands = _section_commands("From the command line")
    assert len(commands) == 4 and commands[0].startswith("python -c")
    (tmp_path / "mynet.py").write_text(MYNET)
    namespace: dict[str, object] = {}
    exec(MYNET, namespace)
    net = namespace["make_net"]()  # type: ignore[operator]
    torch.save(net.state_dict(), tmp_path / "net.pt")  # the file users have
    np.savez(tmp_path / "train.npz", **_digits("train"))
    np.savez(tmp_path / "val.npz", **_digits("validation"))
    bin_dir = str(Path(sys.executable).parent)  # `python` and `tripwire` of this environment
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    env["TRIPWIRE_PROGRESS"] = "0"
    for command in commands:
        done = subprocess.run(
            command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    rows = (tmp_path / "scores.csv").read_text().splitlines()
    assert rows[0].startswith("index,predicted_class,score,is_anomaly") and len(rows) > 10
