"""DAAIN's secret subsampling key: which activation values of which layers are monitored.

DAAIN (von Baußnern et al., "DAAIN: Detection of Anomalous and Adversarial Input using
Normalizing Flows") brings the outputs of several layers to one common spatial resolution
(bilinear up/down-sampling) and keeps a sparse, fixed subset of the values: spatially and
layer-wise homogeneous, chosen once per monitored model and kept **secret** — an attacker who
knows the model does not know what is watched.

Here the subset is derived deterministically from a key string:

* the key is hashed (SHA-256) into the seed of a `torch.Generator`;
* the `n` points are shared out equally over the layers (a layer gets at most as many points as
  it has values; what it cannot take goes to the others);
* inside a conv layer, points are placed by **stratified (jittered-grid) sampling** over the
  common H×W grid — the grid is cut into ⌈√k⌉×⌈√k⌉ strata, k of them are drawn and one pixel is
  drawn in each, so points never clump (a cheap stand-in for Poisson-disc sampling) — and the
  layer's channels are dealt out evenly (a shuffled cycle of all channels);
* a dense layer (N×D) contributes whole units.

Reading a point at common-resolution pixel (y, x) from a layer of size h×w is exactly what
``F.interpolate(act, (H, W), mode="bilinear", align_corners=False)[:, c, y, x]`` gives, but only
the four neighbours of each point are touched: scoring never builds the upsampled maps.

Examples:
    >>> key = new_key()
    >>> mask = SubsampleMask.from_key(key, {"a": (4, 8, 8), "b": (16,)}, n_points=40)
    >>> mask.n_points, mask.gather({"a": torch.rand(2, 4 * 8 * 8), "b": torch.rand(2, 16)}).shape
    (40, torch.Size([2, 40]))
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from tripwire.errors import InvalidInputError

KEY_BITS = 128


def new_key() -> str:
    """A fresh random key: 128 bits from the operating system's CSPRNG, as 32 hex digits."""
    return secrets.token_hex(KEY_BITS // 8)


def key_fingerprint(key: str) -> str:
    """A short public name for a key (12 hex digits of a salted SHA-256); does not reveal it."""
    return hashlib.sha256(b"tripwire-daain-fingerprint:" + key.encode()).hexdigest()[:12]


def key_generator(key: str) -> torch.Generator:
    """The torch.Generator every random choice of the mask is drawn from."""
    digest = hashlib.sha256(b"tripwire-daain-mask:" + key.encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


LayerShape = tuple[int, ...]  # (C, H, W) of a conv layer or (D,) of a dense one


@dataclass(frozen=True)
class LayerPoints:
    """The points monitored in one layer: channel and common-resolution pixel of each, and the
    four flat indices into the layer's flattened (C·h·w) output with their bilinear weights."""

    layer: str
    channel: torch.Tensor  # (k,) int64
    y: torch.Tensor  # (k,) int64 at the common resolution (0 for dense layers)
    x: torch.Tensor  # (k,) int64
    index: torch.Tensor  # (k, 4) int64
    weight: torch.Tensor  # (k, 4) float32

    def gather(self, flat: torch.Tensor) -> torch.Tensor:
        """The k monitored values of a batch of flattened outputs N×(C·h·w) → N×k."""
        k = self.index.shape[0]
        idx = self.index.to(flat.device)
        vals = flat.index_select(1, idx.reshape(-1)).view(flat.shape[0], k, 4)
        return (vals * self.weight.to(flat.device, flat.dtype)).sum(dim=2)


@dataclass(frozen=True)
class SubsampleMask:
    """The fixed set of monitored activation values, made from a key (see the module docstring).

    Attributes:
        resolution: the common (H, W) all conv layers are brought to.
        layers: per monitored layer, its points, in layer order; the monitored vector is their
            concatenation.
    """

    resolution: tuple[int, int]
    layers: tuple[LayerPoints, ...]

    @property
    def n_points(self) -> int:
        """Length of the monitored vector."""
        return sum(int(p.channel.shape[0]) for p in self.layers)

    @classmethod
    def from_key(
        cls,
        key: str,
        shapes: Mapping[str, LayerShape],
        n_points: int,
        resolution: tuple[int, int] | None = None,
    ) -> SubsampleMask:
        """Derive the mask for layers of the given output shapes (per input) from `key`.

        Args:
            key: the secret; the same key and shapes always give the same mask.
            shapes: layer name → (C, H, W) or (D,), in the order the vector is laid out.
            n_points: values to monitor in total (fewer if the layers hold fewer).
            resolution: the common (H, W); default the largest map among the layers.
        """
        if not shapes:
            raise InvalidInputError("DAAIN needs at least one layer to monitor")
        if n_points < 1:
            raise ValueError(f"n_points must be ≥ 1, got {n_points}")
        for name, shape in shapes.items():
            if len(shape) not in (1, 3) or min(shape) < 1:
                raise InvalidInputError(
                    f"layer {name}: output per input must be C×H×W or D, got {tuple(shape)}"
                )
        spatial = [s for s in shapes.values() if len(s) == 3]
        if resolution is None:
            resolution = (
                (max(s[1] for s in spatial), max(s[2] for s in spatial)) if spatial else (1, 1)
            )
        res_h, res_w = int(resolution[0]), int(resolution[1])
        if res_h < 1 or res_w < 1:
            raise ValueError(f"resolution must be positive, got {resolution}")
        capacity = {
            name: (s[0] * min(s[1] * s[2], res_h * res_w) if len(s) == 3 else s[0])
            for name, s in shapes.items()
        }
        share = _share_out(n_points, capacity)
        g = key_generator(key)
        points = []
        for name, shape in shapes.items():
            k = share[name]
            if k == 0:
                continue
            if len(shape) == 1:
                channel = torch.randperm(shape[0], generator=g)[:k].sort().values
                zeros = torch.zeros(k, dtype=torch.int64)
                index = channel.unsqueeze(1).repeat(1, 4)
                weight = torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(k, 1)
                points.append(LayerPoints(name, channel, zeros, zeros, index, weight))
                continue
            c, h, w = shape
            channel, y, x = _stratified_points(k, c, res_h, res_w, g)
            index, weight = _bilinear_taps(channel, y, x, (c, h, w), (res_h, res_w))
            points.append(LayerPoints(name, channel, y, x, index, weight))
        return cls((res_h, res_w), tuple(points))

    def gather(self, flat_outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The monitored vector N×n_points from each layer's flattened output N×(C·h·w)."""
        return torch.cat([p.gather(flat_outputs[p.layer]) for p in self.layers], dim=1)

    def as_tensors(self) -> dict[str, torch.Tensor]:
        """(layer index, channel, y, x) of every point, for tests and per-pixel maps."""
        layer = torch.cat([torch.full_like(p.channel, i) for i, p in enumerate(self.layers)], dim=0)
        return {
            "layer": layer,
            "channel": torch.cat([p.channel for p in self.layers]),
            "y": torch.cat([p.y for p in self.layers]),
            "x": torch.cat([p.x for p in self.layers]),
        }


def _share_out(n: int, capacity: Mapping[str, int]) -> dict[str, int]:
    """Split n points as equally as possible over layers, none above its capacity."""
    share = dict.fromkeys(capacity, 0)
    left = min(n, sum(capacity.values()))
    open_ = [name for name in capacity if capacity[name] > 0]
    while left > 0 and open_:
        each, extra = divmod(left, len(open_))
        for i, name in enumerate(open_):
            give = min(each + (1 if i < extra else 0), capacity[name] - share[name])
            share[name] += give
            left -= give
        open_ = [name for name in open_ if share[name] < capacity[name]]
    return share


def _stratified_points(
    k: int, channels: int, res_h: int, res_w: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """k distinct (channel, y, x) points spread evenly over an res_h×res_w grid and channels."""
    pixels = res_h * res_w
    if k <= pixels:
        # Jittered grid: ⌈√k⌉ strata per side (fewer if the grid is smaller), k strata drawn,
        # one pixel drawn uniformly inside each. Strata are disjoint, so pixels are distinct.
        sh = min(res_h, math.ceil(math.sqrt(k)))
        sw = min(res_w, math.ceil(k / sh))
        while sh * sw < k:  # only when one side is short
            sh = min(res_h, sh + 1)
            sw = min(res_w, math.ceil(k / sh))
        strata = torch.randperm(sh * sw, generator=g)[:k]
        sy, sx = strata // sw, strata % sw
        y0 = (sy * res_h) // sh
        y1 = ((sy + 1) * res_h) // sh
        x0 = (sx * res_w) // sw
        x1 = ((sx + 1) * res_w) // sw
        u = torch.rand(k, generator=g)
        v = torch.rand(k, generator=g)
        y = y0 + (u * (y1 - y0)).long().clamp_max(y1 - y0 - 1)
        x = x0 + (v * (x1 - x0)).long().clamp_max(x1 - x0 - 1)
        # Channels dealt out evenly: a shuffled cycle of all channels.
        cycle = torch.randperm(channels, generator=g).repeat(math.ceil(k / channels))[:k]
        channel = cycle[torch.randperm(k, generator=g)]
    else:
        flat = torch.randperm(channels * pixels, generator=g)[:k]
        channel, rest = flat // pixels, flat % pixels
        y, x = rest // res_w, rest % res_w
    order = torch.argsort(channel * pixels + y * res_w + x)
    return channel[order], y[order], x[order]


def _source_coords(dst: torch.Tensor, src_size: int, dst_size: int) -> tuple[torch.Tensor, ...]:
    """Bilinear (align_corners=False) source indices i0, i1 and weight of i1, as PyTorch's."""
    scale = src_size / dst_size
    src = ((dst.double() + 0.5) * scale - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(src_size - 1)
    i1 = (i0 + 1).clamp_max(src_size - 1)
    lam = (src - i0.double()).clamp(0.0, 1.0)
    lam = torch.where(i1 == i0, torch.zeros_like(lam), lam)
    return i0, i1, lam


def _bilinear_taps(
    channel: torch.Tensor,
    y: torch.Tensor,
    x: torch.Tensor,
    shape: tuple[int, int, int],
    resolution: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices (k, 4) into C·h·w and weights (k, 4) of bilinear resampling to resolution."""
    _, h, w = shape
    y0, y1, ly = _source_coords(y, h, resolution[0])
    x0, x1, lx = _source_coords(x, w, resolution[1])
    base = channel * (h * w)
    index = torch.stack(
        [base + y0 * w + x0, base + y0 * w + x1, base + y1 * w + x0, base + y1 * w + x1], 1
    )
    weight = torch.stack(
        [(1 - ly) * (1 - lx), (1 - ly) * lx, ly * (1 - lx), ly * lx], dim=1
    ).float()
    return index, weight
