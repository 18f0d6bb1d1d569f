"""The settings of a served guard: who may call it, how much one request may hold, how requests
are batched."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class ServeSettings(BaseModel):
    """Limits, keys and batching of `tripwire.serve.create_app`.

    Args:
        api_keys: keys accepted in the ``X-API-Key`` header (or ``Authorization: Bearer``);
            empty means no key is asked for (the CLI allows that only on a loopback address).
        max_request_bytes: the largest request body; larger ones answer 413 before they are read.
        max_images: the most images in one request (413 beyond).
        max_pixels: the most pixels (height × width) of one encoded image (413 beyond), checked
            from the file's header before it is decoded.
        max_batch: the most images the model scores in one pass.
        max_wait_ms: how long the first request of a batch waits for others to join it.
        timeout_s: how long a request may wait for its scores (503 beyond).
        top_k: how many class probabilities each answer lists.
        audit_thumbnails: store a PNG thumbnail of each flagged input in the audit log.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_keys: frozenset[str] = frozenset()
    max_request_bytes: Annotated[int, Field(gt=0)] = 32 * 2**20
    max_images: Annotated[int, Field(gt=0)] = 64
    max_pixels: Annotated[int, Field(gt=0)] = 4096 * 4096
    max_batch: Annotated[int, Field(gt=0)] = 64
    max_wait_ms: Annotated[float, Field(ge=0)] = 5.0
    timeout_s: Annotated[float, Field(gt=0)] = 30.0
    top_k: Annotated[int, Field(gt=0)] = 3
    audit_thumbnails: bool = False
