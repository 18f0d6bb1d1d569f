"""The served guard's audit log, in SQLite and in a real PostgreSQL server (a throw-away cluster
on a Unix socket, started here; `TRIPWIRE_REQUIRE_POSTGRES=1`, as CI sets, makes its absence a
failure instead of a skip)."""

from __future__ import annotations

import datetime
import glob
import hashlib
import io
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from tiny_world import contract_world, fit_on_world
from tripwire.detectors import create_detector
from tripwire.guard import Guard
from tripwire.serve import ServeSettings, create_app
from tripwire.serve.audit import AuditLog, FlaggedInput, flagged_input


def _rows(n: int, start: int = 0) -> list[FlaggedInput]:
    return [FlaggedInput(f"{i:064x}", f"img{i}", i % 3, float(i), 0.5) for i in range(start, n)]


def _check_log(log: AuditLog) -> None:
    log.record(_rows(4))
    log.record(_rows(9, start=4))  # 9 rows written, 5 kept
    kept = log.recent()
    assert [r["name"] for r in kept] == [f"img{i}" for i in (8, 7, 6, 5, 4)]
    assert kept[0]["predicted_class"] == 2 and kept[0]["score"] == 8.0
    at = kept[0]["scored_at"]  # UTC (SQLite drops the zone, PostgreSQL keeps it)
    now = datetime.datetime.now(datetime.UTC)
    assert abs((at.replace(tzinfo=datetime.UTC) - now).total_seconds()) < 600
    log.record([])


def test_sqlite_keeps_the_newest_rows(tmp_path: Path) -> None:
    log = AuditLog(f"sqlite:///{tmp_path / 'audit.sqlite'}", keep=5)
    _check_log(log)
    log.close()
    again = AuditLog(f"sqlite:///{tmp_path / 'audit.sqlite'}", keep=5)  # the table is reused
    assert len(again.recent()) == 5


def test_a_bad_url_says_so() -> None:
    with pytest.raises(ValueError, match="audit database"):
        AuditLog("nosuchdb://x")


def test_rows_hash_the_pixels_and_carry_a_thumbnail() -> None:
    image = torch.rand(3, 100, 80)
    row = flagged_input(image, "a.png", 4, 2.5, 1.0, thumbnail=True)
    assert row.image_sha256 == flagged_input(image.clone(), "b", 4, 2.5, 1.0, False).image_sha256
    assert row.image_sha256 != flagged_input(image + 1e-3, "a", 4, 2.5, 1.0, False).image_sha256
    assert row.thumbnail_png is not None
    assert Image.open(io.BytesIO(row.thumbnail_png)).size == (51, 64)


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    return contract_world()


@pytest.fixture(scope="module")
def guard(world: dict[str, Any]) -> Guard:
    det = fit_on_world(create_detector("msp"), world)
    det.calibrate(world["model"], world["val"])
    return Guard(world["model"], det)


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def test_the_server_logs_exactly_the_flagged_inputs(
    guard: Guard, world: dict[str, Any], tmp_path: Path
) -> None:
    log = AuditLog(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    images = torch.cat([world["test"][:20], world["shift"][:20]])
    want = guard(images)
    assert 0 < int(want.is_anomaly.sum()) < 40
    app = create_app(guard, ServeSettings(audit_thumbnails=True), log)
    with TestClient(app) as client:
        r = client.post("/v1/score", files={"b": ("b.npy", _npy(images.numpy()))})
        assert r.status_code == 200, r.text
    flagged = [a for a in r.json()["images"] if a["is_anomaly"]]
    rows = log.recent(1000)[::-1]
    assert [row["name"] for row in rows] == [a["name"] for a in flagged]
    assert [row["score"] for row in rows] == pytest.approx([a["score"] for a in flagged])
    first = int(flagged[0]["name"].split("[")[1].rstrip("]"))
    pixels = images[first].contiguous()
    digest = hashlib.sha256(str(pixels.dtype).encode() + pixels.numpy().tobytes()).hexdigest()
    assert rows[0]["image_sha256"] == digest
    assert all(row["thumbnail_png"] for row in rows)


def _initdb() -> str | None:
    found = shutil.which("initdb") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None
    )
    return found


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    initdb = _initdb()
    if initdb is None:
        if os.environ.get("TRIPWIRE_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL (initdb, pg_ctl) is required here but not installed")
        pytest.skip("PostgreSQL is not installed")
    bindir = Path(initdb).parent
    # PostgreSQL refuses to run as root: then as the `postgres` user Debian's package made
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="tripwire-pg-"))
    root.chmod(0o755)
    data = root / "data"
    if as_user:
        shutil.chown(root, "postgres")
    run = {"check": True, "capture_output": True}
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"], **run
    )  # type: ignore[call-overload]
    options = f"-k {root} -c listen_addresses='' -c fsync=off"
    subprocess.run(
        [
            *as_user,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-w",
            "-l",
            str(root / "log"),
            "start",
        ],
        **run,
    )  # type: ignore[call-overload]
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={root}"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def test_postgresql_keeps_the_newest_rows(postgres_url: str) -> None:
    log = AuditLog(postgres_url, keep=5)
    _check_log(log)
    log.close()


def test_the_server_logs_to_postgresql(
    guard: Guard, world: dict[str, Any], postgres_url: str
) -> None:
    log = AuditLog(postgres_url)
    noise = world["shift"][:10]
    before = len(log.recent(10_000))
    with TestClient(create_app(guard, ServeSettings(), log)) as client:
        r = client.post("/v1/score", files={"b": ("b.npy", _npy(noise.numpy()))})
    assert r.status_code == 200, r.text
    flagged = sum(a["is_anomaly"] for a in r.json()["images"])
    assert flagged > 0 and len(log.recent(10_000)) == before + flagged
