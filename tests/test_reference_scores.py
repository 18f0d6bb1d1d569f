"""Every registered detector still gives its reference scores on the contract world
(`reference_scores.py` says how the references were made and how to renew them)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from scipy.stats import spearmanr

from reference_scores import (
    LIBRARY_FITTED,
    REFERENCE_FILE,
    detector_scores,
    platform,
    reference_world,
)
from tripwire.detectors import list_detectors

_FILE = json.loads(REFERENCE_FILE.read_text())
REFERENCES: dict[str, list[float]] = _FILE["scores"]
SAME_LIBRARIES = _FILE["platform"] == platform()


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    return reference_world()


def test_every_registered_detector_has_references() -> None:
    assert sorted(REFERENCES) == sorted(list_detectors()), (
        "renew tests/reference_scores.json: python tests/reference_scores.py"
    )


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_scores_unchanged(name: str, world: dict[str, Any]) -> None:
    scores = torch.tensor(detector_scores(name, world), dtype=torch.float64)
    expected = torch.tensor(REFERENCES[name], dtype=torch.float64)
    if name in LIBRARY_FITTED and not SAME_LIBRARIES:
        # other numpy / SciPy / scikit-learn versions than the references': the same order
        assert spearmanr(scores, expected).statistic >= 0.9, (
            "renew tests/reference_scores.json under these versions if this change is meant"
        )
        return
    # float32 computations: equal up to the rounding that BLAS kernels may order differently
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-6)
