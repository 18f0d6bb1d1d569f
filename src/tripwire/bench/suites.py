"""Benchmark suites: which model, in-distribution data and anomaly sets a benchmark runs.

The `mnist-lenet` suite is the paper's smallest setting (Zhao et al., Tables 2–7, rows
"LeNet (MNIST)") plus the sets the paper lacks. Every OOD set there is for evaluation only; the
detectors that must fit on anomalies (KD+BU, LID, fingerprints) get FGSM of **training** images,
as the paper trains KD+BU and LID.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tripwire.errors import TripwireError

Family = Literal["ood", "adversarial", "noise"]


@dataclass(frozen=True)
class AnomalySpec:
    """One anomaly set of a suite.

    Attributes:
        name: the row name in reports (``"fashion-mnist"``, ``"bim-a"``, …).
        family: ``"ood"``, ``"adversarial"`` or ``"noise"``.
        source: a data source name (OOD sets) or an anomaly generator kind (attacks, noise).
        params: generator parameters (override its defaults).
        paper_row: the row key in the paper's tables, if the paper has this set.
        per_target: make a targeted source-free set (fooling images) one target class at a
            time, so each class stops evolving at its own goal instead of the slowest class's.
    """

    name: str
    family: Family
    source: str
    params: dict[str, Any] = field(default_factory=dict)
    paper_row: str | None = None
    per_target: bool = False

    @property
    def is_generated(self) -> bool:
        """True for attacks and noise (made by a generator), False for data sources."""
        return self.family != "ood"


@dataclass(frozen=True)
class Sizes:
    """How many inputs each stage uses."""

    fit: int  # ID training images the detectors fit on
    calibration: int  # held-out ID images for the per-class thresholds
    id_test: int  # ID test images scored
    attacked: int  # ID test images each attack starts from
    per_set: int  # images per OOD / noise set
    fooling_per_class: int  # fooling images per target class
    fit_anomalies: int  # FGSM images of training inputs for detectors that need anomalies


@dataclass(frozen=True)
class Suite:
    """A benchmark: models × detectors × anomaly sets."""

    name: str
    models: tuple[str, ...]
    id_source: str
    anomalies: tuple[AnomalySpec, ...]
    full: Sizes
    fast: Sizes
    paper: str | None = None  # file in tripwire/bench/paper/
    paper_model: dict[str, str] = field(default_factory=dict)  # our model → paper's table suffix
    notes: tuple[str, ...] = ()

    def spec(self, name: str) -> AnomalySpec:
        """The anomaly set called `name`."""
        for a in self.anomalies:
            if a.name == name:
                return a
        raise TripwireError(f"suite {self.name} has no anomaly set {name!r}")


MNIST_LENET = Suite(
    name="mnist-lenet",
    models=("lenet-mnist", "lenet-mnist-oe"),
    id_source="mnist",
    anomalies=(
        AnomalySpec("fashion-mnist", "ood", "fashion-mnist", paper_row="fashion-mnist"),
        AnomalySpec("omniglot", "ood", "omniglot", paper_row="omniglot"),
        AnomalySpec("omniglot-inverted", "ood", "omniglot-inverted"),
        AnomalySpec("animal-mnist", "ood", "animal-mnist"),
        AnomalySpec("font-letters", "ood", "font-letters"),
        AnomalySpec("photo-crops", "ood", "photo-crops"),
        AnomalySpec("fgsm", "adversarial", "fgsm", paper_row="fgsm"),
        AnomalySpec("bim-a", "adversarial", "bim-a", paper_row="bim-a"),
        AnomalySpec("bim-b", "adversarial", "bim-b", paper_row="bim-b"),
        AnomalySpec("jsma", "adversarial", "jsma", paper_row="jsma"),
        AnomalySpec("cw", "adversarial", "cw-l2", paper_row="cw"),
        AnomalySpec("pgd-linf", "adversarial", "pgd-linf"),
        AnomalySpec("deepfool", "adversarial", "deepfool"),
        AnomalySpec("gaussian", "noise", "gaussian", paper_row="gaussian"),
        AnomalySpec("uniform", "noise", "uniform", paper_row="uniform"),
        AnomalySpec("fooling", "noise", "fooling", paper_row="fooling", per_target=True),
    ),
    full=Sizes(
        fit=54_000,
        calibration=6_000,
        id_test=10_000,
        attacked=1_000,
        per_set=2_000,
        fooling_per_class=10,
        fit_anomalies=2_000,
    ),
    fast=Sizes(
        fit=5_000,
        calibration=1_000,
        id_test=1_000,
        attacked=100,
        per_set=300,
        fooling_per_class=1,
        fit_anomalies=300,
    ),
    paper="lenet_mnist.json",
    notes=(
        "ID = MNIST test set; detectors fit on MNIST training images, per-class thresholds on a "
        "held-out part of the training set.",
        "Attacks start from correctly classified MNIST test images; only successful adversarial "
        "examples are scored (the success rate is shown beside each row).",
        "Fooling images: one evolutionary run per target class (10 populations each, as Nguyen "
        "et al. ran one GA per class), so each class stops at its own goal; evolving all 100 in "
        "one batch made every class wait for the slowest one (2.8× the CPU time, measured).",
    ),
)

SUITES: dict[str, Suite] = {MNIST_LENET.name: MNIST_LENET}


def get_suite(name: str) -> Suite:
    """The suite called `name`."""
    try:
        return SUITES[name]
    except KeyError:
        raise TripwireError(f"unknown suite {name!r}; known: {', '.join(SUITES)}") from None
