"""Detectors: one protocol (`Detector`), a registry by name, one file per method.

Importing this package registers every detector.
"""

from tripwire.data.base import check_images
from tripwire.detectors import (  # noqa: F401  (registers)
    ash,
    daain,
    elo,
    energy,
    entropy,
    fdbd,
    feature_response,
    fingerprints,
    gen,
    gram,
    kd_bu,
    knn,
    lid,
    mahalanobis,
    maxlogit,
    msp,
    nnguide,
    odin,
    react,
    rmds,
    scale,
    uniform,
    uniform_fusion,
    uniform_plus,
    vim,
)
from tripwire.detectors.base import Detector
from tripwire.detectors.feature_response import FeatureResponseDetector
from tripwire.detectors.fingerprints import FingerprintDetector
from tripwire.detectors.registry import (
    DEFAULT_DETECTOR,
    create_detector,
    get_detector_class,
    list_detectors,
    register_detector,
)
from tripwire.detectors.uniform import UniformDetector
from tripwire.detectors.uniform_fusion import UniformFusionDetector
from tripwire.detectors.uniform_plus import UniformPlusDetector

__all__ = [
    "DEFAULT_DETECTOR",
    "Detector",
    "FeatureResponseDetector",
    "FingerprintDetector",
    "UniformDetector",
    "UniformFusionDetector",
    "UniformPlusDetector",
    "check_images",
    "create_detector",
    "get_detector_class",
    "list_detectors",
    "register_detector",
]
