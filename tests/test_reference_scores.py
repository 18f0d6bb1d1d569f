"""Every registered detector still gives its reference scores on the contract world
(`reference_scores.py` says how the references were made and how to renew them)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from reference_scores import REFERENCE_FILE, detector_scores, reference_world
from tripwire.detectors import list_detectors

REFERENCES: dict[str, list[float]] = json.loads(REFERENCE_FILE.read_text())


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
    # float32 computations: equal up to the rounding that BLAS kernels may order differently
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-6)
