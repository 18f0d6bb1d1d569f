"""`tripwire serve`: a saved detector and its model behind an HTTP API."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import typer

from tripwire.cli import app
from tripwire.cli.detect import DETECTOR_DIR, SIGNING_KEY, load_guard, model_option
from tripwire.cli.options import CACHE_DIR, DATA_DIR, DEVICE, OUTPUT, THREADS, WEIGHTS, set_threads
from tripwire.errors import InvalidInputError

API_KEYS_ENV = "TRIPWIRE_API_KEYS"
_API_KEY_FILE = typer.Option(
    None,
    "--api-key-file",
    help=f"A file of API keys, one per line (also: ${API_KEYS_ENV}, comma-separated). "
    "Clients send one in the X-API-Key header.",
)


def is_loopback(host: str) -> bool:
    """Whether every address `host` resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def read_api_keys(path: Path | None) -> frozenset[str]:
    """Keys from `path` (one per line; blank lines and ``#`` comments skipped) and from
    $TRIPWIRE_API_KEYS (comma-separated); each at least 16 characters."""
    keys: list[str] = []
    if path is not None:
        try:
            lines = path.read_text().splitlines()
        except OSError as e:
            raise InvalidInputError(f"--api-key-file: {e}") from None
        keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    keys += [k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip()]
    short = [k for k in keys if len(k) < 16]
    if short:
        raise InvalidInputError(f"{len(short)} API key(s) shorter than 16 characters")
    return frozenset(keys)


@app.command("serve")
def serve_command(
    detector: Path = DETECTOR_DIR,
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, min=0, max=65535, help="Port to listen on."),
    api_key_file: Path | None = _API_KEY_FILE,
    no_auth: bool = typer.Option(
        False, "--no-auth", help="Serve without API keys; only on a loopback address."
    ),
    max_batch: int = typer.Option(64, min=1, help="Most images per model pass."),
    max_wait_ms: float = typer.Option(
        5.0, min=0.0, help="How long a request waits for others to share its model pass."
    ),
    max_images: int = typer.Option(64, min=1, help="Most images per request."),
    max_request_mb: float = typer.Option(32.0, min=0.001, help="Largest request body, MiB."),
    max_pixels: int = typer.Option(
        4096 * 4096, min=1, help="Most pixels of one encoded image (checked before decoding)."
    ),
    timeout: float = typer.Option(30.0, min=0.001, help="Seconds a request may wait (503)."),
    audit_db: str = typer.Option(
        "sqlite:///tripwire-audit.sqlite",
        "--audit-db",
        help="Where flagged inputs are logged (time, image hash, class, score, threshold): a "
        "SQLAlchemy URL, sqlite:///FILE or postgresql+psycopg://USER@HOST/DB.",
    ),
    no_audit: bool = typer.Option(False, "--no-audit", help="Keep no audit log."),
    audit_keep: int = typer.Option(
        100_000, min=1, help="Rows the audit log keeps (the newest; older ones are dropped)."
    ),
    audit_thumbnails: bool = typer.Option(
        False, "--audit-thumbnails", help="Also log a 64-pixel PNG thumbnail of each input."
    ),
    model: str | None = model_option(None),
    weights: Path | None = WEIGHTS,
    output: str = OUTPUT,
    signing_key: Path | None = SIGNING_KEY,
    data_dir: Path | None = DATA_DIR,
    cache_dir: Path | None = CACHE_DIR,
    threads: int | None = THREADS,
    device: str | None = DEVICE,
) -> None:
    """Serve a fitted detector and its model over HTTP (FastAPI + uvicorn).

    `POST /v1/score` takes PNG / JPEG / .npy images (multipart files, or JSON with base64) and
    answers per image with the class, top-k probabilities, score, threshold and flag;
    `GET /healthz`, `/readyz` and `/metrics` (Prometheus). API keys are required unless
    --no-auth, which is refused on an address other than loopback. Concurrent requests share
    model passes (--max-batch, --max-wait-ms). Flagged inputs are logged to --audit-db
    (SQLite by default). SIGTERM or Ctrl-C: no new connections, every accepted request is
    answered, then the server stops.
    """
    keys = read_api_keys(api_key_file)
    if no_auth and keys:
        raise InvalidInputError("--no-auth and API keys together: choose one")
    if no_auth and not is_loopback(host):
        raise InvalidInputError(
            f"--no-auth on {host}: anyone who can reach it could use the model; serve without "
            "keys only on a loopback address (127.0.0.1, ::1)"
        )
    if not no_auth and not keys:
        raise InvalidInputError(
            f"no API keys: pass --api-key-file or set ${API_KEYS_ENV} (or --no-auth on 127.0.0.1)"
        )
    set_threads(threads)
    import uvicorn

    from tripwire.serve import ServeSettings, create_app
    from tripwire.serve.audit import AuditLog

    settings = ServeSettings(
        api_keys=keys,
        max_request_bytes=int(max_request_mb * 2**20),
        max_images=max_images,
        max_pixels=max_pixels,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        timeout_s=timeout,
        audit_thumbnails=audit_thumbnails,
    )
    guard = load_guard(detector, model, weights, output, signing_key, data_dir, cache_dir, device)
    audit = None if no_audit else AuditLog(audit_db, keep=audit_keep)
    uvicorn.run(
        create_app(guard, settings, audit),
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=int(timeout) + 1,
    )
