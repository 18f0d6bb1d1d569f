"""The detectors page's "Adding a detector" example, run as written: the new detector registers,
takes its declared parameter, refuses a value out of its range, and scores like its formula."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tiny_world import contract_world
from tripwire.detectors import create_detector
from tripwire.detectors.registry import _DETECTORS
from tripwire.errors import InvalidInputError

PAGE = Path(__file__).resolve().parents[1] / "docs" / "detectors.md"


def _example() -> tuple[str, str]:
    """(the example's code without its last line, the last line: the refused creation)."""
    text = PAGE.read_text()
    code = re.search(r"## Adding a detector.*?```python\n(.*?)```", text, re.S)
    assert code is not None, "the detectors page lost its example"
    *body, last = code.group(1).strip().splitlines()
    return "\n".join(body), last


def test_the_example_detector_works_as_documented() -> None:
    body, refused = _example()
    namespace: dict[str, object] = {}
    try:
        # compiled apart from this module's `from __future__ import annotations`, as on the page
        exec(compile(body, str(PAGE), "exec", dont_inherit=True), namespace)
        with pytest.raises(InvalidInputError, match="temperature: Input should be greater than 0"):
            exec(refused, namespace)
        world = contract_world()
        det = create_detector("tempered-msp", temperature=3.0)
        det.fit(world["model"], world["train"])
        x = world["test"][:16]
        expected = 1.0 - torch.softmax(world["model"](x).double() / 3.0, dim=1).amax(dim=1)
        torch.testing.assert_close(det.score(world["model"], x), expected.detach())
    finally:
        _DETECTORS.pop("tempered-msp", None)
