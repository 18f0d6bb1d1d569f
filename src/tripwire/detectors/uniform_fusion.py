"""tripwire's default detector: the views of `uniform-plus`, ViM's and a Gram view, each
standardised on ID images of the predicted class, fused one-sidedly so that no view can cancel
another.

Why: `uniform-plus` adds its standardised views up. On natural-image CNNs the confidence views
find over-confident anomalies — fooling images, BIM-b's examples, driven to ≥ 99 % confidence —
*more* typical than clean inputs (z ≪ 0), and the sum cancels the evidence that the SVM views
found (measured on ResNet-44's validation anomalies: BIM-b 95.6, fooling images 90.9 AUROC
against 99.8 and 96 for the one-sided sum). Here, for an input x predicted as c, with the views
of `UniformPlusDetector` (the MDL and logit one-class SVMs, −log max-softmax, the logit margin),
ViM's score on the penultimate features (Wang et al. 2022) and the Gram deviation of the
deepest feature maps at order 1 (Sastry & Oore 2020),

    z_k(x) = (s_k(x) − m_{k,c}) / (q_{k,c} − m_{k,c})      (m: median, q: 99 % quantile of s_k
                                                             over ID calibration images of c)
    z_gram ← min(z_gram, 5)                                 (its deviation is 0 for most ID
                                                             inputs and heavy-tailed beyond)
    g(x)   = Σ_k max(z_k(x), 0)                             (fusion ``"sum+"``)

A view adds evidence only where it finds x less typical than the median ID input of its class.
The MDL is the layer with the highest *median* AUROC of its SVM over the ID-made proxies
(``layer_criterion="median"``; `tripwire.detectors.mdl`): with the mean, one proxy's swing
moved VGG-16's choice between ``conv3_x`` and ``relu5_x`` with the seed, and the late layer
lost the fooling images.

The views and the fusion were chosen by `research/select_default_cifar.py` on validation data
only (CIFAR-10 validation images and anomalies made from training images; no test set), with
the rule fixed before its run: the smallest total shortfall, beyond 1.0 AUROC point, to the best
registered detector on each validation set. The Gram view and its cap came later, on the same
kind of data for ResNet-44, VGG-16 and LeNet-5: the smallest total shortfall over the three
models among the caps that keep every LeNet-5 set within 0.5 points of the best. The median
criterion came last, among five rules for the layer choice, on the same kind of data
(`research/layer_choice_rules.py`: the smallest total shortfall to the best single layer over
five seeds of the choice). See research/notebook.md, "A default for natural-image CNNs", "The
Gram view inside the default" and "A layer choice that is stable over seeds".
"""

from __future__ import annotations

from collections.abc import Sequence

from tripwire.detectors.mdl import Aggregate
from tripwire.detectors.registry import register_detector
from tripwire.detectors.uniform_plus import Extra, Fusion, UniformPlusDetector


@register_detector
class UniformFusionDetector(UniformPlusDetector):
    """`uniform-plus`'s views, ViM's and a capped Gram view, standardised per class and fused
    one-sidedly.

    Args: as `UniformPlusDetector`, with other defaults: ``extras=("msp", "margin", "vim",
    "gram")``, ``fusion="sum+"``, ``layer_criterion="median"``.

    Examples:
        >>> det = UniformFusionDetector().fit(model, train).calibrate(model, val)  # doctest: +SKIP
        >>> det.score(model, x)                                                  # doctest: +SKIP
    """

    name = "uniform-fusion"

    extras: Sequence[Extra] = ("msp", "margin", "vim", "gram")
    fusion: Fusion = "sum+"
    layer_criterion: Aggregate = "median"
