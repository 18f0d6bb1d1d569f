"""`tripwire serve` over real HTTP: a uvicorn server on a loopback port, an httpx client."""

from __future__ import annotations

import base64
import contextlib
import io
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from tiny_world import SHAPE, contract_world, fit_on_world
from tripwire.cli import app as cli
from tripwire.detectors import create_detector
from tripwire.errors import DataError
from tripwire.guard import Guard
from tripwire.serve import ServeSettings, create_app
from tripwire.serve.decode import decode_images

KEY = "k" * 24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    return contract_world()


@pytest.fixture(scope="module")
def guard(world: dict[str, Any]) -> Guard:
    det = fit_on_world(create_detector("uniform-fusion"), world)
    det.calibrate(world["model"], world["val"])
    return Guard(world["model"], det)


@pytest.fixture(scope="module")
def server(guard: Guard) -> Iterator[str]:
    limits = ServeSettings(
        api_keys=frozenset({KEY}),
        max_request_bytes=200_000,
        max_images=40,
        max_pixels=256 * 256,
        max_batch=32,
        max_wait_ms=20,
    )
    port = _free_port()
    config = uvicorn.Config(
        create_app(guard, limits), host="127.0.0.1", port=port, log_level="warning"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    else:
        raise RuntimeError("the server did not become ready")
    yield url
    srv.should_exit = True
    thread.join(timeout=10)


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def _png(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format="PNG")
    return buf.getvalue()


def _uint8(world: dict[str, Any], n: int) -> np.ndarray:
    """n ID test images as uint8 N×H×W×C (exactly representable: the guard sees the same)."""
    return (world["test"][:n] * 255).round().byte().permute(0, 2, 3, 1).numpy()


def _post(url: str, **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", {"X-API-Key": KEY})
    return httpx.post(f"{url}/v1/score", headers=headers, timeout=30, **kwargs)


def test_health_and_readiness(server: str) -> None:
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server}/readyz").status_code == 200


def test_a_batch_of_npy_images_gets_the_guards_answers(
    server: str, guard: Guard, world: dict[str, Any]
) -> None:
    images = _uint8(world, 12)
    r = _post(server, files={"batch": ("b.npy", _npy(images))})
    assert r.status_code == 200, r.text
    answers = r.json()["images"]
    want = guard(decode_images(_npy(images), "b.npy", SHAPE, 10**6)[0])  # the server's floats
    assert [a["class"] for a in answers] == want.predicted.tolist()
    np.testing.assert_allclose([a["score"] for a in answers], want.scores.numpy(), rtol=1e-6)
    assert [a["is_anomaly"] for a in answers] == want.is_anomaly.tolist()
    first = answers[0]
    assert first["name"] == "b.npy[0]" and len(first["top_k"]) == 3 and not first["resized"]
    assert first["top_k"][0]["class"] == first["class"]
    assert first["threshold"] == pytest.approx(float(guard.thresholds[first["class"]]))


def test_png_files_and_base64_json_are_read_alike(server: str, world: dict[str, Any]) -> None:
    images = _uint8(world, 3)
    pngs = [_png(im.squeeze(-1) if im.shape[-1] == 1 else im) for im in images]
    multipart = _post(server, files=[("f", (f"{i}.png", p)) for i, p in enumerate(pngs)])
    as_json = _post(
        server,
        json={
            "images": [
                {"name": f"{i}.png", "data": base64.b64encode(p).decode()}
                for i, p in enumerate(pngs)
            ]
        },
    )
    assert multipart.status_code == as_json.status_code == 200, (multipart.text, as_json.text)
    assert multipart.json() == as_json.json()
    npy = _post(server, files={"b": ("b.npy", _npy(images))}).json()["images"]
    assert [a["score"] for a in multipart.json()["images"]] == pytest.approx(
        [a["score"] for a in npy]
    )


def test_a_png_of_another_size_is_resized_and_says_so(server: str) -> None:
    big = np.random.default_rng(0).integers(0, 256, (SHAPE[1] * 2, SHAPE[2] * 2), np.uint8)
    r = _post(server, files={"f": ("big.png", _png(big))})
    assert r.status_code == 200 and r.json()["images"][0]["resized"] is True


def test_keys_are_required(server: str, world: dict[str, Any]) -> None:
    files = {"b": ("b.npy", _npy(_uint8(world, 1)))}
    assert _post(server, files=files, headers={}).status_code == 401
    assert _post(server, files=files, headers={"X-API-Key": "wrong" * 5}).status_code == 401
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert _post(server, files=files, headers=bearer).status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"files": {"b": ("b.npy", _npy(np.zeros((41, 12, 12), np.uint8)))}}, 413),  # images
        ({"content": b"x" * 300_000, "headers": {"X-API-Key": KEY}}, 413),  # bytes
        ({"files": {"f": ("huge.png", _png(np.zeros((300, 300), np.uint8)))}}, 413),  # pixels
        ({"files": {"f": ("junk.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 50)}}, 422),
        ({"files": {"f": ("cut.png", _png(np.zeros((12, 12), np.uint8))[:40])}}, 422),
        ({"files": {"b": ("b.npy", _npy(np.zeros((2, 5, 5), np.uint8)))}}, 422),  # size
        ({"files": {"b": ("b.npy", _npy(np.full((1, 12, 12), 2.0)))}}, 422),  # out of [0, 1]
        ({"json": {"images": [{"data": "not base64!"}]}}, 422),
        ({"json": {"pictures": []}}, 422),
        ({"content": b"plain", "headers": {"X-API-Key": KEY, "content-type": "text/plain"}}, 415),
    ],
)
def test_bad_requests_answer_4xx_with_a_reason(
    server: str, body: dict[str, Any], status: int
) -> None:
    r = _post(server, **body)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


def test_concurrent_requests_share_model_passes(
    server: str, guard: Guard, world: dict[str, Any]
) -> None:
    images = _uint8(world, 24)

    def one(i: int) -> dict[str, Any]:
        r = _post(server, files={"b": (f"{i}.npy", _npy(images[i]))})
        assert r.status_code == 200, r.text
        return r.json()["images"][0]

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(one, range(24)))
    want = guard(decode_images(_npy(images), "b.npy", SHAPE, 10**6)[0])
    assert [a["class"] for a in answers] == want.predicted.tolist()
    # scored in other batches than `want`: convolutions round differently, z-scores amplify it
    scores = [a["score"] for a in answers]
    np.testing.assert_allclose(scores, want.scores.numpy(), rtol=1e-4, atol=1e-4)
    metrics = httpx.get(f"{server}/metrics").text
    # some model pass scored more than one request's image
    passes = {
        line.split("le=")[1].split("}")[0].strip('"'): float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("tripwire_batch_images_bucket")
    }
    assert passes["1.0"] < passes["+Inf"], metrics
    assert 'tripwire_requests_total{endpoint="/v1/score",status="200"}' in metrics


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_decoding_arbitrary_bytes_fails_only_with_data_errors(data: bytes) -> None:
    for prefix in (b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\x93NUMPY\x01\x00"):
        try:
            x, _ = decode_images(prefix + data, "fuzz", SHAPE, 256 * 256)
        except DataError:
            continue
        assert x.ndim == 4 and tuple(x.shape[1:]) == SHAPE


def test_cli_refuses_to_serve_without_keys_beyond_loopback(tmp_path: Path) -> None:
    runner = CliRunner()
    det = tmp_path / "det"
    args = ["serve", "--detector", str(det)]
    result = runner.invoke(cli, [*args, "--no-auth", "--host", "0.0.0.0"])
    assert result.exit_code != 0 and "loopback" in str(result.exception)
    result = runner.invoke(cli, args, env={"TRIPWIRE_API_KEYS": ""})
    assert result.exit_code != 0 and "no API keys" in str(result.exception)
    result = runner.invoke(cli, args, env={"TRIPWIRE_API_KEYS": "short"})
    assert result.exit_code != 0 and "16 characters" in str(result.exception)


def test_sigterm_answers_every_accepted_request(tmp_path: Path, msp_digits_detector: Path) -> None:
    det = msp_digits_detector
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tripwire",
            "serve",
            "--detector",
            str(det),
            "--no-auth",
            "--port",
            str(port),
            "--max-wait-ms",
            "400",
            "--audit-db",
            f"sqlite:///{tmp_path / 'audit.sqlite'}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError("the server did not become ready")
        image = _npy(np.zeros((8, 8), np.uint8))

        def one(_: int) -> int:
            return _post(url, files={"b": ("b.npy", image)}, headers={}).status_code

        with ThreadPoolExecutor(8) as pool:
            answers = pool.map(one, range(8))
            time.sleep(0.2)  # the requests are in, waiting for their batch
            server.send_signal(signal.SIGTERM)
            statuses = list(answers)
        assert statuses == [200] * 8
        # uvicorn shuts down, then re-raises the signal to the default handler
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)
        assert server.stdout is not None
        assert b"Application shutdown complete" in server.stdout.read()
    finally:
        server.kill()
        server.wait()
