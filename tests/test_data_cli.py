"""`tripwire data list` and `tripwire data preview`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tripwire.cli import app
from tripwire.data import list_sources

runner = CliRunner()


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIPWIRE_OFFLINE", "1")
    monkeypatch.setenv("TRIPWIRE_PROGRESS", "0")
    monkeypatch.setenv("COLUMNS", "250")


def test_list_shows_every_source_and_presence(data_dir: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["data", "list", "--data-dir", str(data_dir)])
    assert r.exit_code == 0, r.output
    for s in list_sources():
        assert s.name in r.output
    assert "10,000" in r.output and "present" in r.output and "generated" in r.output
    r = runner.invoke(app, ["data", "list", "--data-dir", str(tmp_path)])
    assert r.exit_code == 0 and "missing" in r.output and "present" not in r.output


def test_preview_writes_png(tmp_path: Path) -> None:
    out = tmp_path / "g.png"
    r = runner.invoke(app, ["data", "preview", "digits8-28", "--n", "9", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert Image.open(out).size[0] > 100


def test_preview_of_user_npz(tmp_path: Path) -> None:
    p = tmp_path / "mine.npz"
    np.savez(p, x=np.zeros((3, 32, 32, 3), np.uint8))
    out = tmp_path / "m.png"
    r = runner.invoke(app, ["data", "preview", str(p), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.exists() and "3 of 3" in r.output


@pytest.mark.parametrize("cmd", [["data", "--help"], ["data", "list", "--help"]])
def test_help(cmd: list[str]) -> None:
    r = runner.invoke(app, cmd)
    assert r.exit_code == 0 and "Usage" in r.output


def test_preview_unknown_source_is_a_clean_error(tmp_path: Path) -> None:
    from tripwire.errors import DataError

    r = runner.invoke(app, ["data", "preview", "nope", "--out", str(tmp_path / "x.png")])
    assert r.exit_code != 0 and isinstance(r.exception, DataError)
    assert "known data sources" in str(r.exception)
