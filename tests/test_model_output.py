"""Models whose forward returns a tuple, a dict or an object with ``logits``: `select_output`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from tiny_world import make_world, trained_world
from tripwire.detectors import Detector, UniformFusionDetector, create_detector
from tripwire.features import extract_features
from tripwire.guard import Guard
from tripwire.model_output import ModelOutputError, pick_output, select_output


@dataclass
class HFStyleOutput:
    """What a Hugging Face classifier returns, reduced to plain attributes."""

    logits: torch.Tensor
    hidden: torch.Tensor


class Returns(nn.Module):
    """The tiny world's network, returning its logits in another form."""

    def __init__(self, net: nn.Module, form: str) -> None:
        super().__init__()
        self.net, self.form = net, form

    def forward(self, x: torch.Tensor) -> object:
        logits = self.net(x)
        hidden = logits.detach().norm(dim=1)  # N: no second N×K tensor beside the logits
        if self.form == "tuple":
            return logits, hidden
        if self.form == "dict":
            return {"hidden": hidden, "logits": logits}
        return HFStyleOutput(logits, hidden)


LOGITS = torch.randn(4, 3)
HIDDEN = torch.randn(4, 5)


@pytest.mark.parametrize(
    ("out", "output"),
    [
        (LOGITS, "auto"),
        ((LOGITS, torch.zeros(4)), "auto"),
        ([HIDDEN, LOGITS], 1),
        ({"hidden": HIDDEN, "logits": LOGITS}, "auto"),
        ({"scores": LOGITS}, "scores"),
        (HFStyleOutput(LOGITS, HIDDEN), "auto"),
        (HFStyleOutput(HIDDEN, LOGITS), "hidden"),
    ],
)
def test_the_choice_finds_the_logits(out: object, output: int | str) -> None:
    assert pick_output(out, output) is LOGITS


@pytest.mark.parametrize(
    ("out", "output", "choices"),
    [
        ({"scores": LOGITS}, "auto", r"'scores' \(4×3\)"),
        ((LOGITS,), 3, r"0 \(4×3\)"),
        ((torch.zeros(4, dtype=torch.int64),), "auto", r"0 \(4\)"),
        ((LOGITS, HIDDEN), "auto", r"0 \(4×3\), 1 \(4×5\)"),
        (HFStyleOutput(LOGITS, HIDDEN), "probs", r"'logits' \(4×3\), 'hidden' \(4×5\)"),
    ],
)
def test_a_choice_without_logits_lists_the_choices(
    out: object, output: int | str, choices: str
) -> None:
    with pytest.raises(ModelOutputError, match=f"choices: {choices}"):
        pick_output(out, output)


def test_without_a_choice_the_feature_pass_says_how_to_make_one() -> None:
    model, train, _ = trained_world()
    with pytest.raises(ModelOutputError, match=r"returns a tuple.*select_output.*choices: 0 \("):
        extract_features(Returns(model, "tuple"), [train.as_float()[:8]])


@pytest.mark.parametrize("form", ["tuple", "dict", "object"])
def test_detectors_fit_and_score_through_the_choice(form: str) -> None:
    model, train, _ = trained_world()
    wrapped = select_output(Returns(model, form))
    x = make_world(40, seed=5)[0]
    params = {"msp": {}, "knn": {}, "odin": {"epsilons": [0.0, 0.002], "validation_size": 100}}
    for name, kwargs in params.items():  # logits, penultimate features, input gradients
        det = create_detector(name, **kwargs).fit(wrapped, train)
        plain = create_detector(name, **kwargs).fit(model, train)
        torch.testing.assert_close(det.score(wrapped, x), plain.score(model, x))


def test_the_default_detector_goes_through_fit_save_load_score_and_guard(tmp_path: Path) -> None:
    model, train, val = trained_world()
    wrapped = select_output(Returns(model, "tuple"))
    det = UniformFusionDetector(layer="net.conv2").fit(wrapped, train).calibrate(wrapped, val)
    det.save(tmp_path / "det")
    loaded = Detector.load(tmp_path / "det")
    x = make_world(40, seed=5)[0]
    torch.testing.assert_close(loaded.score(wrapped, x), det.score(wrapped, x))
    result = Guard(wrapped, loaded)(x)
    assert result.scores.shape == (40,) and result.predicted.equal(model(x).argmax(1))


def test_a_second_choice_replaces_the_first() -> None:
    model, _, _ = trained_world()
    wrapped = select_output(select_output(Returns(model, "dict"), "hidden"), "logits")
    x = make_world(4, seed=5)[0]
    torch.testing.assert_close(wrapped(x), model(x))
