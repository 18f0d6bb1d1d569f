"""Segmentation: a synthetic MNIST-canvas data set, a small U-Net, anomalies for segmentation
inputs, DAAIN's per-pixel anomaly maps and the per-image scores made from them, and the fusion
of per-image scores normalised on ID data (the setting of von Baußnern et al.'s DAAIN), and
outlier exposure for the segmenter (entropy maximisation on pasted proxies, Chan et al. 2021).

Examples:
    >>> from tripwire.segmentation import load_canvas, train_segmenter   # doctest: +SKIP
    >>> train = load_canvas("train", n=4000)                              # doctest: +SKIP
    >>> net = train_segmenter(train)                                      # doctest: +SKIP
    >>> letters = load_source("font-letters-kz", "train")                 # doctest: +SKIP
    >>> oe = train_segmenter(train, init=net, outliers=letters, lr=1e-3)  # doctest: +SKIP
"""

from tripwire.segmentation.anomalies import (
    attack_segmentation,
    gaussian_noise,
    paste_patches,
    uniform_noise,
)
from tripwire.segmentation.canvas import (
    BACKGROUND,
    NUM_CLASSES,
    SegmentationSet,
    load_canvas,
    make_canvas_set,
)
from tripwire.segmentation.fusion import ScoreFusion
from tripwire.segmentation.model import TinyUNet, segmentation_metrics, train_segmenter
from tripwire.segmentation.outlier_exposure import paste_outliers, uniform_cross_entropy
from tripwire.segmentation.scoring import anomaly_map, cell_scores, image_scores, mean_entropy

__all__ = [
    "BACKGROUND",
    "NUM_CLASSES",
    "ScoreFusion",
    "SegmentationSet",
    "TinyUNet",
    "anomaly_map",
    "attack_segmentation",
    "cell_scores",
    "gaussian_noise",
    "image_scores",
    "load_canvas",
    "make_canvas_set",
    "mean_entropy",
    "paste_outliers",
    "paste_patches",
    "segmentation_metrics",
    "train_segmenter",
    "uniform_cross_entropy",
    "uniform_noise",
]
