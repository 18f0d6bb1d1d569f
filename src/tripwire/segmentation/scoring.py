"""DAAIN on segmentation networks: per-location anomaly maps and per-image scores made from them.

Per image, `DaainDetector.score` works on a segmentation model as on a classifier (its
``predicted`` is the most frequent class of the predicted map), but it sums the score over all
monitored values, so a small anomalous region (a patch pasted into a quarter of the image) is
diluted by the many normal ones. Here each monitored value's share of the score
(`DaainDetector.point_scores`, e.g. its HBOS term log(1 / hist_d(z_d))) is put back where it was
read: the common-resolution grid is cut into cells of `cell`×`cell` pixels and

    c_{n,g} = mean { share_{n,i} : point i lies in cell g }        (`cell_scores`)

(dense-layer points have no place and are left out; cells without points are left out of the
aggregates). The per-pixel map (`anomaly_map`) is c bilinearly resized to the image size; the
per-image score (`image_scores`) is the mean of the `top_k` highest cells of each image,

    s_n = (1/k) Σ_{j ≤ k} c_{n,(j)}          (c_{n,(1)} ≥ c_{n,(2)} ≥ …)

meant to rank an anomaly confined to one region as high as one spread over the whole image.
On the MNIST canvases it did not beat the whole-image sum on validation anomalies (pasted
letters, photo crops, noise patches; research/notebook.md, DAAIN): a pasted patch changes the
deep layers' activations far beyond its own pixels, and each cell holds few monitored values.

Examples:
    >>> det = DaainDetector().fit(segmenter, canvases.as_image_set())    # doctest: +SKIP
    >>> anomaly_map(det, segmenter, x).shape                              # doctest: +SKIP
    torch.Size([8, 64, 64])
    >>> image_scores(det, segmenter, x, top_k=2).shape                    # doctest: +SKIP
    torch.Size([8])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tripwire.detectors.base import DataLike, as_image_set
from tripwire.detectors.daain import DaainDetector
from tripwire.errors import InvalidInputError
from tripwire.features import eval_mode, model_device


def cell_scores(
    detector: DaainDetector, model: nn.Module, x: DataLike, *, cell: int = 8
) -> torch.Tensor:
    """Mean score share of the monitored points in each `cell`×`cell` cell, N×gh×gw (NaN where
    a cell holds no point)."""
    if cell < 1:
        raise InvalidInputError(f"cell must be ≥ 1 pixel, got {cell}")
    data = as_image_set(x, "x")
    terms = detector.point_scores(model, data).float()  # N×n
    where = detector.mask_.as_tensors()
    spatial = torch.tensor(
        [len(detector.layer_shapes_[p.layer]) == 3 for p in detector.mask_.layers]
    )[where["layer"]]
    if not bool(spatial.any()):
        raise InvalidInputError("the detector monitors no spatial (N×C×H×W) layer: no map")
    res_h, res_w = detector.mask_.resolution
    gh, gw = -(-res_h // cell), -(-res_w // cell)
    cell_index = (where["y"] // cell) * gw + (where["x"] // cell)
    cell_index, terms = cell_index[spatial], terms[:, spatial]
    sums = torch.zeros(terms.shape[0], gh * gw).index_add_(1, cell_index, terms)
    counts = torch.zeros(gh * gw).index_add_(0, cell_index, torch.ones(len(cell_index)))
    means = sums / counts
    means[:, counts == 0] = float("nan")
    return means.view(-1, gh, gw)


def anomaly_map(
    detector: DaainDetector, model: nn.Module, x: DataLike, *, cell: int = 8
) -> torch.Tensor:
    """Per-pixel anomaly maps N×H×W (higher = more anomalous) of images x N×C×H×W."""
    data = as_image_set(x, "x")
    grid = cell_scores(detector, model, data, cell=cell)
    grid = torch.nan_to_num(grid, nan=0.0).unsqueeze(1)
    h, w = data.image_shape[1:]
    return F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)[:, 0]


def image_scores(
    detector: DaainDetector, model: nn.Module, x: DataLike, *, cell: int = 8, top_k: int = 1
) -> torch.Tensor:
    """Per-image scores (N,) float64: the mean of the `top_k` highest cells of each image."""
    if top_k < 1:
        raise InvalidInputError(f"top_k must be ≥ 1, got {top_k}")
    grid = cell_scores(detector, model, x, cell=cell).flatten(1)
    grid = grid[:, ~torch.isnan(grid[0])]
    k = min(top_k, grid.shape[1])
    return grid.topk(k, dim=1).values.mean(dim=1).double()


@torch.no_grad()
def mean_entropy(
    model: nn.Module, x: DataLike, batch_size: int = 256, *, top: float = 1.0
) -> torch.Tensor:
    """A baseline without DAAIN: the mean per-pixel predictive entropy of a segmenter, (N,).

    s_n = (1/HW) Σ_p H(softmax(f(x_n)_p)), H(q) = −Σ_k q_k log q_k (higher = more anomalous;
    Hendrycks & Gimpel's confidence baseline, per pixel and averaged over the image). With
    `top` < 1 the mean runs over the m = max(1, ⌊top · HW⌋) most uncertain pixels only,
    s_n = (1/m) Σ_{j ≤ m} H_{n,(j)} (H_{n,(1)} ≥ H_{n,(2)} ≥ …): a small uncertain region (a
    pasted object, after the entropy-maximisation training of Chan et al. 2021) is then not
    diluted by the many confident background pixels.

    Examples:
        >>> mean_entropy(TinyUNet(), torch.rand(2, 1, 64, 64)).shape   # doctest: +SKIP
        torch.Size([2])
    """
    if not 0.0 < top <= 1.0:
        raise InvalidInputError(f"top must be a fraction in (0, 1], got {top}")
    data = as_image_set(x, "x")
    device = model_device(model)
    out = []
    with eval_mode(model):
        for xb in data.batches(batch_size):
            p = F.softmax(model(xb.to(device)).double(), dim=1)
            h = -(p * torch.log(p.clamp_min(1e-300))).sum(1).flatten(1)
            if top < 1.0:
                h = h.topk(max(1, int(top * h.shape[1])), dim=1).values
            out.append(h.mean(1).cpu())
    return torch.cat(out)
