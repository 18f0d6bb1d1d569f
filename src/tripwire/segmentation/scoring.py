"""DAAIN on segmentation networks: per-image scores and per-pixel anomaly maps.

Per image, `DaainDetector.score` works on a segmentation model as on a classifier (its
``predicted`` is the most frequent class of the predicted map). The per-pixel map spreads each
monitored value's share of the score (`DaainDetector.point_scores`) over the common-resolution
pixel it was read at: the map at pixel p is the mean share of the points in the cell around p
(cells of `cell`×`cell` pixels), bilinearly resized to the image size. Dense-layer points have
no place and are left out.

Example:
    >>> det = DaainDetector().fit(segmenter, canvases.as_image_set())    # doctest: +SKIP
    >>> anomaly_map(det, segmenter, x).shape                              # doctest: +SKIP
    torch.Size([8, 64, 64])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tripwire.detectors.base import DataLike, as_image_set
from tripwire.detectors.daain import DaainDetector


def anomaly_map(
    detector: DaainDetector, model: nn.Module, x: DataLike, *, cell: int = 8
) -> torch.Tensor:
    """Per-pixel anomaly maps N×H×W (higher = more anomalous) of images x N×C×H×W."""
    data = as_image_set(x, "x")
    terms = detector.point_scores(model, data).float()  # N×n
    where = detector.mask_.as_tensors()
    spatial = torch.tensor(
        [len(detector.layer_shapes_[p.layer]) == 3 for p in detector.mask_.layers]
    )[where["layer"]]
    res_h, res_w = detector.mask_.resolution
    gh, gw = max(1, -(-res_h // cell)), max(1, -(-res_w // cell))
    cell_index = (where["y"] // cell) * gw + (where["x"] // cell)
    cell_index, terms = cell_index[spatial], terms[:, spatial]
    sums = torch.zeros(terms.shape[0], gh * gw).index_add_(1, cell_index, terms)
    counts = torch.zeros(gh * gw).index_add_(0, cell_index, torch.ones(len(cell_index)))
    grid = (sums / counts.clamp_min(1)).view(-1, 1, gh, gw)
    h, w = data.image_shape[1:]
    return F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
