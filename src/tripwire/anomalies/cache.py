"""`make_anomalies`: generate an anomaly set, or load it from the on-disk cache.

Cached sets live in ``<cache_dir>/anomalies/<kind>-<key>.npz``; the key is a SHA-256 over the
model's `weights_digest`, the kind, the resolved parameters, the seed and a digest of the inputs
(images and labels), so a benchmark never regenerates a set it already made, and never reuses one
made for other weights, settings or inputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tripwire.anomalies.base import FORMAT_VERSION, AnomalySet
from tripwire.anomalies.registry import get_generator
from tripwire.data.base import check_images
from tripwire.errors import FormatError
from tripwire.models.digest import weights_digest
from tripwire.paths import cache_dir as resolve_cache_dir

logger = logging.getLogger(__name__)


def inputs_digest(x: torch.Tensor | None, y: torch.Tensor | None) -> str:
    """SHA-256 (hex, 16 characters) of the images (as float32) and labels; "none" without x."""
    if x is None:
        return "none"
    h = hashlib.sha256()
    xf = check_images(x, what="x").float().detach().cpu().contiguous()
    h.update(str(tuple(xf.shape)).encode())
    h.update(xf.numpy().tobytes())
    if y is not None:
        h.update(torch.as_tensor(y).to(torch.int64).cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(i) for i in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(i) for k, i in v.items()}
    return v


def cache_key(
    kind: str, params: dict[str, Any], seed: int, model_digest: str, x_digest: str
) -> str:
    """The cache key of one generated set (hex, 24 characters)."""
    blob = json.dumps(
        {
            "v": FORMAT_VERSION,
            "kind": kind,
            "params": _jsonable(params),
            "seed": int(seed),
            "model": model_digest,
            "x": x_digest,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def make_anomalies(
    kind: str,
    model: nn.Module,
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    *,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    batch_size: int | None = None,
    **params: Any,
) -> AnomalySet:
    """Generate anomalies of `kind` for `model` (cached on disk), e.g. adversarial examples of x.

    Attacks need x (N×C×H×W in [0, 1]) and labels y and attack only the inputs the model gets
    right. Noise and fooling images need no x: give ``n`` and ``shape`` (or an x to copy them
    from). `params` override the generator's defaults (see `list_generators()`). With
    `use_cache` the set is read from / written to ``<cache_dir>/anomalies/`` (default:
    `tripwire.paths.cache_dir()`).

    Examples:
        >>> adv = make_anomalies("bim-a", model, x, y, seed=0)  # doctest: +SKIP
        >>> noise = make_anomalies("gaussian", model, n=1000, shape=(1, 28, 28))  # doctest: +SKIP
        >>> adv.summary()["success_rate"], noise.images.shape  # doctest: +SKIP
    """
    gen = get_generator(kind, batch_size=batch_size, **params)
    if not use_cache:
        return gen.generate(model, x, y, seed=seed)
    digest = weights_digest(model)
    key = cache_key(kind, gen.params, seed, digest, inputs_digest(x, y))
    path = resolve_cache_dir(cache_dir) / "anomalies" / f"{kind}-{key}.npz"
    if path.exists():
        try:
            cached = AnomalySet.load(path)
        except FormatError as e:
            logger.warning("ignoring unreadable cached anomaly set %s (%s)", path, e)
        else:
            if cached.model_digest == digest:
                logger.info("loaded cached %s set from %s", kind, path)
                return cached
    result = gen.generate(model, x, y, seed=seed)
    result.save(path)
    logger.info("cached %s set at %s", kind, path)
    return result
