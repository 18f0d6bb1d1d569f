"""The HTTP API of a served guard (FastAPI).

``POST /v1/score``
    Images as multipart files (any field name; PNG, JPEG, … or ``.npy``, one image or a batch per
    file) or as JSON ``{"images": [{"name": "a.png", "data": "<base64>"}, …]}``. The answer holds
    one entry per image, in order: ``name``, ``class``, ``top_k`` (class and probability, most
    probable first), ``score`` (higher = more anomalous), ``threshold`` (of that class),
    ``is_anomaly`` (``score > threshold``: do not trust ``class``) and ``resized``.
    401 without a valid key, 413 over a limit, 415 for another body type, 422 for an image the
    model cannot take (with the reason), 503 when the scores take longer than the timeout.
``GET /healthz``
    200 while the process runs.
``GET /readyz``
    200 once the guard has answered a warm-up batch and until shutdown begins, else 503.
``GET /metrics``
    Prometheus text: requests by endpoint and status, request latency, images scored, images
    flagged by predicted class, the sizes of the model's batches, and flagged inputs the audit
    log failed to store (the answer goes out regardless; the error is logged).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from tripwire.errors import TripwireError
from tripwire.guard import Guard, GuardResult
from tripwire.serve.audit import AuditLog, flagged_input
from tripwire.serve.decode import TooLargeError, decode_images
from tripwire.serve.microbatch import MicroBatcher
from tripwire.serve.settings import ServeSettings

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _RequestError(Exception):
    """An answer other than 200, with its status and reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _BodyTooLargeError(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes answers 413 — at once when its
    Content-Length says so, else as soon as the bytes read pass the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLargeError
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLargeError:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        reason = f"the request body is over the server's limit of {self.limit} bytes"
        await JSONResponse({"detail": reason}, status_code=413)(scope, receive, send)


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tripwire_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "tripwire_request_seconds", "Request latency", ["endpoint"], registry=self.registry
        )
        self.images = Counter("tripwire_images", "Images scored", registry=self.registry)
        self.flagged = Counter(
            "tripwire_flagged",
            "Images flagged, by predicted class",
            ["predicted_class"],
            registry=self.registry,
        )
        self.audit_errors = Counter(
            "tripwire_audit_errors",
            "Flagged inputs the audit log failed to store",
            registry=self.registry,
        )
        self.batch = Histogram(
            "tripwire_batch_images",
            "Images per model pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )


def create_app(
    guard: Guard, settings: ServeSettings | None = None, audit: AuditLog | None = None
) -> FastAPI:
    """The FastAPI application serving `guard` (see the module docstring for the API), writing
    every flagged input to `audit` when given."""
    settings = settings or ServeSettings()
    shape = tuple(guard.detector.input_shape_)
    metrics = _Metrics()
    batcher = MicroBatcher(guard, settings.max_batch, settings.max_wait_ms)
    state = {"ready": False}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        await batcher.submit(torch.rand(2, *shape))  # warm-up: the first pass is the slowest
        batcher.on_batch = metrics.batch.observe  # from here on: the warm-up is not counted
        state["ready"] = True
        yield
        state["ready"] = False  # readyz fails first, then every accepted request is answered
        await batcher.stop()
        if audit is not None:
            audit.close()

    app = FastAPI(title="tripwire", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)  # inside the counting one

    @app.middleware("http")
    async def count(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        endpoint = request.url.path
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        if state["ready"] and batcher.running:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/score")
    async def score(request: Request) -> Response:
        try:
            _authorise(request, settings.api_keys)
            files = await _uploaded(request, settings)
            images, names, resized = [], [], []
            for name, data in files:
                x, was_resized = decode_images(data, name, shape, settings.max_pixels)
                images.append(x)
                names += [name] if len(x) == 1 else [f"{name}[{i}]" for i in range(len(x))]
                resized += [was_resized] * len(x)
            if len(names) > settings.max_images:
                raise _RequestError(
                    413,
                    f"{len(names)} images; the server takes at most "
                    f"{settings.max_images} per request",
                )
            if not names:
                raise _RequestError(422, "the request holds no images")
            batch = torch.cat(images)
            try:
                result = await asyncio.wait_for(batcher.submit(batch), settings.timeout_s)
            except TimeoutError:
                raise _RequestError(503, f"no answer within {settings.timeout_s} s") from None
        except _RequestError as e:
            return JSONResponse({"detail": e.reason}, status_code=e.status)
        except TooLargeError as e:
            return JSONResponse({"detail": str(e)}, status_code=413)
        except TripwireError as e:  # DataError, InvalidInputError: the image is at fault
            return JSONResponse({"detail": str(e)}, status_code=422)
        metrics.images.inc(len(names))
        for c in result.predicted[result.is_anomaly].tolist():
            metrics.flagged.labels(str(c)).inc()
        if audit is not None and bool(result.is_anomaly.any()):
            await _audit(audit, batch, names, result, guard, settings.audit_thumbnails, metrics)
        return JSONResponse({"images": _answers(result, guard, names, resized, settings.top_k)})

    return app


async def _audit(
    audit: AuditLog,
    images: torch.Tensor,
    names: list[str],
    result: GuardResult,
    guard: Guard,
    thumbnails: bool,
    metrics: _Metrics,
) -> None:
    """Store the flagged inputs; a failure is logged and counted, the answer still goes out."""
    thresholds = guard.thresholds.detach().cpu().double()
    rows = [
        flagged_input(
            images[i],
            names[i],
            int(result.predicted[i]),
            float(result.scores[i]),
            float(thresholds[result.predicted[i]]),
            thumbnails,
        )
        for i in torch.nonzero(result.is_anomaly).flatten().tolist()
    ]
    try:
        await asyncio.to_thread(audit.record, rows)
    except Exception:  # the database's errors are many kinds; the log names it
        logger.exception("the audit log could not store %d flagged inputs", len(rows))
        metrics.audit_errors.inc(len(rows))


def _authorise(request: Request, keys: frozenset[str]) -> None:
    if not keys:
        return
    given = request.headers.get("x-api-key")
    bearer = request.headers.get("authorization", "")
    if given is None and bearer.lower().startswith("bearer "):
        given = bearer[7:].strip()
    # compare_digest against every key: the time taken does not say how much of a key matched
    if given is None or not any(hmac.compare_digest(given.encode(), k.encode()) for k in keys):
        raise _RequestError(401, "a valid API key is required (X-API-Key header)")


async def _uploaded(request: Request, settings: ServeSettings) -> list[tuple[str, bytes]]:
    """(name, bytes) of every image file in the request body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        try:
            form = await request.form(
                max_files=settings.max_images,
                max_fields=settings.max_images,
                max_part_size=settings.max_request_bytes,
            )
        except (HTTPException, MultiPartException) as e:  # Starlette's parse errors
            reason = str(getattr(e, "detail", None) or e)
            over = reason.startswith(("Too many", "Part exceeded", "Field exceeded"))
            raise _RequestError(413 if over else 422, f"multipart body: {reason}") from None
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        return [(f.filename or f"file{i}", await f.read()) for i, f in enumerate(files)]
    if kind == "application/json":
        try:
            body = await request.json()
            entries = body["images"]
            if not isinstance(entries, list):
                raise TypeError("images must be a list")
            if len(entries) > settings.max_images:
                raise _RequestError(
                    413,
                    f"{len(entries)} images; the server takes at most "
                    f"{settings.max_images} per request",
                )
            return [
                (str(e.get("name", f"image{i}")), base64.b64decode(e["data"], validate=True))
                for i, e in enumerate(entries)
            ]
        except _RequestError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as e:
            raise _RequestError(
                422,
                'expected JSON {"images": [{"name": …, "data": base64}, …]}: '
                f"{type(e).__name__}: {e}",
            ) from None
    raise _RequestError(
        415, "send multipart/form-data files or application/json with base64 images"
    )


def _answers(
    result: GuardResult, guard: Guard, names: list[str], resized: list[bool], top_k: int
) -> list[dict[str, Any]]:
    probabilities = torch.softmax(result.logits.double(), dim=1)
    top = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1)
    thresholds = guard.thresholds.detach().cpu().double()[result.predicted]
    return [
        {
            "name": names[i],
            "class": int(result.predicted[i]),
            "top_k": [
                {"class": int(c), "probability": float(p)}
                for c, p in zip(top.indices[i], top.values[i], strict=True)
            ],
            "score": _json_number(float(result.scores[i])),
            "threshold": _json_number(float(thresholds[i])),
            "is_anomaly": bool(result.is_anomaly[i]),
            "resized": resized[i],
        }
        for i in range(len(names))
    ]


def _json_number(x: float) -> float | None:
    """`x` as JSON can hold it: ±infinity as the largest double, NaN as null."""
    if math.isnan(x):
        return None
    return max(min(x, sys.float_info.max), -sys.float_info.max)
