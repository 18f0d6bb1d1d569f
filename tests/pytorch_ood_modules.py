"""pytorch-ood's detector modules without its package init (which needs torchvision).

pytorch-ood is installed by ``make setup`` with ``pip install --no-deps pytorch-ood``. Where it is
missing, tests that use it skip — except under ``make test`` (``TRIPWIRE_REQUIRE_PYTORCH_OOD=1``),
where they fail, so that a cross-check cannot pass by skipping.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest


def pytorch_ood_detector(module: str) -> types.ModuleType:
    """``pytorch_ood.detector.<module>``, imported under bare package stubs."""
    if "pytorch_ood.detector" in sys.modules:
        return importlib.import_module(f"pytorch_ood.detector.{module}")
    spec = importlib.util.find_spec("pytorch_ood")
    if spec is None or not spec.submodule_search_locations:
        if os.environ.get("TRIPWIRE_REQUIRE_PYTORCH_OOD") == "1":
            pytest.fail("pytorch-ood is not installed; run make setup")
        pytest.skip("pytorch-ood is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    for name, path in (("pytorch_ood", root), ("pytorch_ood.detector", root / "detector")):
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = [str(path)]
            sys.modules[name] = stub
    return importlib.import_module(f"pytorch_ood.detector.{module}")
