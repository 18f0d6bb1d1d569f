"""`tripwire serve`: a guard (classifier + detector + thresholds) behind an HTTP API.

`create_app` builds the FastAPI application around a `tripwire.guard.Guard`; `ServeSettings`
holds its limits, keys and batching. ``POST /v1/score`` takes images (PNG, JPEG, ``.npy``) as
multipart files or base64 in JSON and answers per image with the class, its top-k probabilities,
the anomaly score, the threshold and the flag; ``/healthz``, ``/readyz`` and ``/metrics``
(Prometheus) are for the orchestrator. Concurrent requests are scored together
(`MicroBatcher`), one model pass per batch.
"""

from tripwire.serve.app import create_app
from tripwire.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
