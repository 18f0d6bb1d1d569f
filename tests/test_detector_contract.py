"""The contract every registered detector keeps, run against the whole registry.

A tiny seeded world keeps it fast (`tiny_world`: three classes of 1×12×12 blob images and a small
CNN trained on them in a second) and a shift (uniform noise) that any detector worth registering
separates from ID data.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tiny_world import CONTRACT_PARAMS, contract_world, fit_on_world
from tripwire import metrics
from tripwire.detectors import Detector, create_detector, list_detectors
from tripwire.detectors.base import class_thresholds
from tripwire.errors import FormatError, InvalidInputError, NotFittedError

# fDBD separates the tiny world's noise from its three classes only partly (AUROC 0.76 on this
# 16-unit head): the direction is what this test checks; its formula is cross-checked against
# pytorch-ood in test_posthoc_crosscheck.
MIN_AUROC: dict[str, float] = {"fdbd": 0.7}

# Detectors whose default settings fail the direction check here, reported as expected failures
# (strict: one that starts passing fails the run, so the list stays true).
FAILS_DIRECTION: dict[str, str] = {
    "feature-response": (
        "uniform noise gives *more peaked* response maps than the blobs, so the default "
        "direction='higher' (higher entropy = anomalous) ranks it as typical (AUROC ≈ 0.05); "
        "direction='two-sided' passes. On the suites: ResNet-44 uniform noise 50.3, "
        "fooling images 34.9 (docs/reports/cifar10-resnet)"
    )
}

# Scores are float32 computations (returned as float64): equal up to float32 rounding, which
# BLAS kernels may order differently from call to call.
FLOAT32 = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    return contract_world()


def fit(name: str, world: dict[str, Any], **extra: Any) -> Detector:
    det = create_detector(name, **{**CONTRACT_PARAMS.get(name, {}), **extra})
    out = fit_on_world(det, world)
    assert out is det
    return det


@pytest.fixture(scope="module", params=list_detectors())
def fitted(request: pytest.FixtureRequest, world: dict[str, Any]) -> Detector:
    return fit(request.param, world)


def test_score_shape_finite_and_direction(
    fitted: Detector, world: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    if fitted.name in FAILS_DIRECTION:
        request.applymarker(pytest.mark.xfail(strict=True, reason=FAILS_DIRECTION[fitted.name]))
    model = world["model"]
    s_id = fitted.score(model, world["test"])
    s_shift = fitted.score(model, world["shift"])
    assert s_id.shape == (300,) and s_shift.shape == (200,)
    assert torch.isfinite(s_id).all() and torch.isfinite(s_shift).all()
    minimum = MIN_AUROC.get(fitted.name, 0.9)
    assert metrics.auroc(s_id, s_shift) > minimum, "higher must mean more anomalous"


def test_batch_size_invariance(fitted: Detector, world: dict[str, Any]) -> None:
    x = torch.cat([world["test"][:50], world["shift"][:20]])
    a = fitted.score(world["model"], x, batch_size=256)
    b = fitted.score(world["model"], x, batch_size=7)
    # Convolutions pick other kernels for other batch sizes, so logits differ in the last bits;
    # a score may amplify that (e.g. −log max-softmax of a confident net). Batch-dependent
    # scoring (BatchNorm in train mode, batch statistics) shows up orders of magnitude larger.
    # Near a score of 0 a difference of distances (RMDS) keeps the rounding of its terms: the
    # absolute bound follows the scale of the ID scores.
    id_scale = float(a[:50].abs().max())
    torch.testing.assert_close(a, b, rtol=1e-3, atol=max(1e-5, 1e-4 * id_scale))


def test_same_seed_same_scores(fitted: Detector, world: dict[str, Any]) -> None:
    again = fit(fitted.name, world)
    x = world["test"][:64]
    torch.testing.assert_close(
        fitted.score(world["model"], x), again.score(world["model"], x), **FLOAT32
    )


def test_save_load_identical(fitted: Detector, world: dict[str, Any], tmp_path) -> None:
    model = world["model"]
    fitted.calibrate(model, world["val"])
    fitted.save(tmp_path / "det")
    loaded = Detector.load(tmp_path / "det")
    assert type(loaded) is type(fitted) and loaded.get_params() == fitted.get_params()
    x = torch.cat([world["test"][:50], world["shift"][:20]])
    torch.testing.assert_close(loaded.score(model, x), fitted.score(model, x), **FLOAT32)
    assert torch.equal(loaded.predict(model, x), fitted.predict(model, x))


def test_calibration_accepts_about_tpr(fitted: Detector, world: dict[str, Any]) -> None:
    model = world["model"]
    fitted.calibrate(model, world["val"], tpr=0.9)
    accepted = 1 - fitted.predict(model, world["val"]).float().mean().item()
    assert accepted >= 0.9 - 1e-9  # on the calibration images: by construction
    # on 300 new ID images: 0.9 up to chance (SD ≈ 0.017 for 300 draws; the bound is 3.5 SD)
    new = 1 - fitted.predict(model, world["test"]).float().mean().item()
    assert new >= 0.84, new


def test_model_untouched(world: dict[str, Any]) -> None:
    model = world["model"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.requires_grad for p in model.parameters()]
    for name in list_detectors():
        model.train()
        det = fit(name, world)
        det.score(model, world["test"][:20])
        assert model.training, f"{name} left the model in eval mode"
        model.eval()
        det.score(model, world["test"][:20])
        assert not model.training, f"{name} left the model in train mode"
        assert [p.requires_grad for p in model.parameters()] == grads, name
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), f"{name} changed {k}"
        assert all(not m._forward_hooks for m in model.modules()), f"{name} left a hook"


@pytest.mark.parametrize("name", list_detectors())
def test_every_hyper_parameter_is_checked(name: str, world: dict[str, Any]) -> None:
    """Each parameter's hint is its check: a value of no declared type is refused, by name, at
    creation and (set afterwards) at fit."""
    for param in create_detector(name).param_names():
        with pytest.raises(InvalidInputError, match=f"'{name}': {param}: "):
            create_detector(name, **{param: {"no": 1}})
        det = create_detector(name, **CONTRACT_PARAMS.get(name, {}))
        setattr(det, param, {"no": 1})
        with pytest.raises(ValueError, match=f"^{param}: "):
            fit_on_world(det, world)


@pytest.mark.parametrize("name", list_detectors())
def test_unfitted_use_raises(name: str, world: dict[str, Any]) -> None:
    det = create_detector(name, **CONTRACT_PARAMS.get(name, {}))
    with pytest.raises(NotFittedError):
        det.score(world["model"], world["test"][:4])
    with pytest.raises(NotFittedError):
        det.predict(world["model"], world["test"][:4])


def test_predict_needs_calibration(world: dict[str, Any]) -> None:
    det = fit("uniform", world)
    with pytest.raises(NotFittedError, match="calibrate"):
        det.predict(world["model"], world["test"][:4])


BAD_INPUTS = {
    "nan": lambda x: x.index_fill(0, torch.tensor([0]), float("nan")),
    "inf": lambda x: torch.where(x > 0.5, torch.tensor(float("inf")), x),
    "3d": lambda x: x[:, 0],
    "channels": lambda x: x.repeat(1, 3, 1, 1),
    "size": lambda x: x[:, :, :10, :10],
    "above one": lambda x: x * 2 + 0.5,
    "below zero": lambda x: x - 0.5,
    "empty": lambda x: x[:0],
    "int64": lambda x: (x * 255).to(torch.int64),
    "numpy above one": lambda x: (x * 2 + 0.5).numpy(),
    "a list": lambda x: x.tolist(),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_clear_error(case: str, world: dict[str, Any]) -> None:
    det = _uniform(world)
    with pytest.raises(InvalidInputError):
        det.score(world["model"], BAD_INPUTS[case](world["test"][:8].clone()))


def test_the_forms_users_hold_images_in_score_alike(world: dict[str, Any]) -> None:
    """uint8 tensors (÷ 255), numpy arrays (N×C×H×W, N×H×W×C, uint8 or float), one C×H×W
    image, and batches of (images, labels) as a DataLoader yields them."""
    det, model = _uniform(world), world["model"]
    u8 = (world["test"][:8] * 255).round().to(torch.uint8)
    x = u8.float() / 255
    expected = det.score(model, x)
    forms = {
        "uint8 tensor": u8,
        "uint8 numpy": u8.numpy(),
        "channels-last numpy": u8.permute(0, 2, 3, 1).numpy(),
        "float64 numpy": x.double().numpy(),
        "loader": [(u8[:5], torch.zeros(5)), (u8[5:], torch.zeros(3))],
    }
    for form, images in forms.items():
        torch.testing.assert_close(det.score(model, images), expected, **FLOAT32, msg=form)
    torch.testing.assert_close(det.score(model, x[0]), expected[:1], **FLOAT32)
    refit = fit("msp", {**world, "train": world["train"].as_float().numpy()})
    torch.testing.assert_close(refit.score(model, u8), fit("msp", world).score(model, x))


def test_calibration_on_few_images_a_class_warns(
    world: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    det = fit("msp", world)
    with caplog.at_level("WARNING", logger="tripwire.detectors.base"):
        det.calibrate(world["model"], world["val"].subset(slice(0, 30)))
    assert (
        "thresholds from 30 calibration images: 3 of 3 classes have fewer than 100" in caplog.text
    )
    caplog.clear()
    many = torch.cat([world["test"]] * 2)  # 600 images, ≥ 100 of each class
    with caplog.at_level("WARNING", logger="tripwire.detectors.base"):
        det.calibrate(world["model"], many)
    assert "coarse" not in caplog.text


_CACHE: dict[str, Detector] = {}


def _uniform(world: dict[str, Any]) -> Detector:
    if "uniform" not in _CACHE:
        _CACHE["uniform"] = fit("uniform", world)
    return _CACHE["uniform"]


@pytest.mark.parametrize(
    "damage",
    ["json-garbage", "json-wrong-format", "tensors-modified", "tensors-pickle", "missing-tensors"],
)
def test_tampered_files_raise_format_error(damage: str, world: dict[str, Any], tmp_path) -> None:
    import pickle

    folder = _uniform(world).save(tmp_path / "det")
    js, (st,) = folder / "detector.json", folder.glob("state-*.safetensors")
    if damage == "json-garbage":
        js.write_text("{not json")
    elif damage == "json-wrong-format":
        js.write_text('{"format": "something-else"}')
    elif damage == "tensors-modified":
        data = bytearray(st.read_bytes())
        data[-1] ^= 0xFF
        st.write_bytes(bytes(data))
    elif damage == "tensors-pickle":
        st.write_bytes(pickle.dumps({"evil": 1}))
    else:
        st.unlink()
    with pytest.raises(FormatError):
        Detector.load(folder)


def test_class_thresholds_use_the_conformal_rank() -> None:
    scores = torch.arange(100, 0, -1, dtype=torch.float64)  # 100 … 1, all of class 0
    taus = class_thresholds(scores, torch.zeros(100, dtype=torch.int64), 2, tpr=0.9)
    assert taus.tolist() == [91.0, 91.0]  # ⌈101 · 0.9⌉ = 91st smallest; class 1 falls back
    few = class_thresholds(scores[:27], torch.zeros(27, dtype=torch.int64), 1, tpr=0.95)
    assert few.item() == 100.0  # ⌈28 · 0.95⌉ = 27 = n: the largest


def test_unmodelled_classes_take_the_threshold_of_the_others() -> None:
    # class 1 was not modelled: its 30 calibration inputs all share the maximal score 1e9
    scores = torch.cat([torch.arange(1, 101, dtype=torch.float64), torch.full((30,), 1e9)])
    predicted = torch.cat([torch.zeros(100, dtype=torch.int64), torch.ones(30, dtype=torch.int64)])
    plain = class_thresholds(scores, predicted, 2, tpr=0.9)
    assert plain.tolist() == [91.0, 1e9]  # its own rule: τ = 1e9, so with `>` never flagged
    taus = class_thresholds(scores, predicted, 2, tpr=0.9, unmodelled=torch.tensor([False, True]))
    assert taus.tolist() == [91.0, 91.0]  # the rule over class 0's scores: all of class 1 flagged


def test_class_thresholds_cover_new_id_inputs_at_least_tpr() -> None:
    g = torch.Generator().manual_seed(0)
    covered = []
    for _ in range(400):  # 27 calibration scores, as for one class of the demo, then new ones
        calib, new = torch.randn(27, generator=g), torch.randn(1000, generator=g)
        tau = class_thresholds(calib, torch.zeros(27, dtype=torch.int64), 1, tpr=0.95)
        covered.append(float((new <= tau).double().mean()))
    assert sum(covered) / len(covered) >= 0.95  # the empirical quantile gave ≈ 0.93
