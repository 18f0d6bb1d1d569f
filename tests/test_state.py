"""Learned state declared once (`tripwire.detectors.state`): each kind of declaration stores and
restores its attribute, and a loaded value that breaks its declaration is refused."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from tripwire.detectors._baselines import LogisticFusion
from tripwire.detectors.state import learned, meta_of, restore, tensors_of


@dataclass(kw_only=True)
class Holder:
    """Every kind of learned attribute a detector can declare."""

    bank_: torch.Tensor = learned(dtype=torch.float64, finite=True)
    extra_: torch.Tensor | None = learned()
    layers_: list[str] = learned()
    reference_: list[torch.Tensor] = learned()
    masks_: dict[str, torch.Tensor] = learned(stored_as="mask")
    fusion_: LogisticFusion = learned()
    maybe_fusion_: LogisticFusion | None = learned()
    clip_: float = learned()


def _filled() -> Holder:
    h = Holder()
    h.bank_ = torch.rand(4, 3, dtype=torch.float64)
    h.extra_ = None
    h.layers_ = ["a", "b"]
    h.reference_ = [torch.rand(2), torch.rand(3)]
    h.masks_ = {"relu1": torch.ones(5), "fc": torch.zeros(2)}
    h.fusion_ = LogisticFusion(torch.zeros(2), torch.ones(2), torch.rand(2), torch.rand(1))
    h.maybe_fusion_ = None
    h.clip_ = 1.5
    return h


def test_every_kind_round_trips() -> None:
    h = _filled()
    tensors, meta = tensors_of(h), meta_of(h)
    assert set(tensors) == {
        "bank", "reference.0", "reference.1", "mask.relu1", "mask.fc",
        "fusion.mean", "fusion.std", "fusion.coef", "fusion.intercept",
    }  # fmt: skip
    assert meta == {"layers": ["a", "b"], "clip": 1.5}
    back = Holder()
    restore(back, tensors, meta)
    assert torch.equal(back.bank_, h.bank_) and back.extra_ is None
    assert back.layers_ == ["a", "b"] and back.clip_ == 1.5 and back.maybe_fusion_ is None
    assert [t.tolist() for t in back.reference_] == [t.tolist() for t in h.reference_]
    assert set(back.masks_) == {"relu1", "fc"}
    assert torch.equal(back.fusion_.coef, h.fusion_.coef)


def test_a_value_that_breaks_its_declaration_is_refused() -> None:
    h = _filled()
    tensors, meta = tensors_of(h), meta_of(h)
    with pytest.raises(ValueError, match=r"bank must be torch\.float64"):
        restore(Holder(), {**tensors, "bank": tensors["bank"].float()}, meta)
    with pytest.raises(ValueError, match="bank has non-finite"):
        restore(Holder(), {**tensors, "bank": tensors["bank"] / 0}, meta)
    with pytest.raises(ValueError, match="clip"):
        restore(Holder(), tensors, {**meta, "clip": "1.5"})
    with pytest.raises(KeyError):
        restore(Holder(), {k: v for k, v in tensors.items() if k != "bank"}, meta)


def test_an_optional_stored_object_round_trips_when_present() -> None:
    h = _filled()
    h.maybe_fusion_ = LogisticFusion(torch.ones(2), torch.ones(2), torch.rand(2), torch.rand(1))
    back = Holder()
    restore(back, tensors_of(h), meta_of(h))
    assert back.maybe_fusion_ is not None
    assert torch.equal(back.maybe_fusion_.coef, h.maybe_fusion_.coef)
