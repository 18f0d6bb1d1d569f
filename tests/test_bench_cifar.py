"""The CIFAR-10 suites (issue 10): definitions consistent with the data sources, generators,
detectors, zoo and the paper's file; the report's paper cells; a tiny end-to-end run."""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tripwire.anomalies import list_generators
from tripwire.anomalies.registry import get_generator
from tripwire.bench import get_suite, run_suite, write_report
from tripwire.bench.report import load_paper
from tripwire.bench.suites import CIFAR_EPS, SUITES, Sizes
from tripwire.data.base import get_source
from tripwire.detectors import create_detector, list_detectors
from tripwire.errors import TripwireError
from tripwire.models import ModelNotTrainedError, get_recipe, weights_digest
from tripwire.models.stored import STORED_ENV, write_stored
from tripwire.models.weights import round_to_half

CIFAR = ("cifar10-resnet", "cifar10-vgg16")
UNAVAILABLE = {"lsun", "isun", "svhn"}  # the paper's OOD sets that cannot be rebuilt here
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "docs" / "paper_cifar10.json"


@pytest.mark.parametrize("name", CIFAR)
def test_cifar_suite_sources_generators_and_detectors_exist(name: str) -> None:
    suite = get_suite(name)
    kinds = {g.name for g in list_generators()}
    assert get_source(suite.id_source).image_shape == (3, 32, 32)
    for model in suite.models:
        recipe = get_recipe(model)
        assert recipe.source == suite.id_source and recipe.half_precision
    for spec in suite.anomalies:
        if spec.family == "ood":
            assert get_source(spec.source).image_shape == (3, 32, 32), spec.name
        else:
            assert spec.source in kinds, spec.name
            get_generator(spec.source, **spec.params)  # the parameters are valid
    for det, params in suite.detector_params.items():
        assert det in list_detectors()
        assert create_detector(det, **params).get_params().items() >= params.items()
    assert suite.detector_params["kd_bu"] == {"bandwidth": 0.26}
    assert {a.name for a in suite.sets(fast=True)} < {a.name for a in suite.anomalies}
    assert suite.fast.attacked < suite.full.attacked and suite.fast.fit < suite.full.fit
    assert suite.model_seed_for(2) == 0 and not suite.train_models
    assert suite.params_of("kd_bu") == {"bandwidth": 0.26}
    assert suite.params_of("kd_bu", fast=True)["bandwidth"] == 0.26
    assert suite.params_of("odin", fast=True)["validation_size"] <= 200
    assert suite.params_of("odin") == {} and get_suite("mnist-lenet").params_of("kd_bu") == {}


@pytest.mark.parametrize("name", CIFAR)
def test_cifar_attack_settings_are_the_lid_reference_codes(name: str) -> None:
    suite = get_suite(name)
    assert CIFAR_EPS == 0.05 and suite.fit_anomaly_params == {"eps": 0.05}
    assert suite.spec("fgsm").params == {"eps": 0.05}
    for bim in ("bim-a", "bim-b"):
        assert suite.spec(bim).params == {"eps": 0.05, "step": 0.005, "steps": 50}
    fooling = suite.spec("fooling")
    assert fooling.params["goal"] == 0.999 and fooling.per_target


@pytest.mark.parametrize("name", CIFAR)
def test_cifar_paper_rows_map_to_the_papers_cells(name: str) -> None:
    suite = get_suite(name)
    paper = load_paper(suite)
    assert paper == json.loads(SHARED.read_text()) if SHARED.exists() else paper is not None
    (model,) = suite.models
    key = suite.paper_model[model]
    rows_in_paper = set()
    for tab in paper["tables"].values():
        rows_in_paper |= set(tab[key])
    ours = {a.paper_row for a in suite.anomalies if a.paper_row}
    assert ours <= rows_in_paper
    # every cell of the paper is compared, apart from the sets that cannot be rebuilt here
    assert rows_in_paper - ours == UNAVAILABLE
    assert [a.name for a in suite.anomalies if a.paper_row == "tinyimagenet"] == [
        "tinyimagenet-resize",
        "tinyimagenet-crop",
    ]


def test_cifar_suites_say_the_data_is_jpeg_and_rebuilt() -> None:
    for name in CIFAR:
        notes = " ".join(get_suite(name).notes)
        assert "JPEG-compressed" in notes and "rebuilds" in notes
    assert set(CIFAR) <= set(SUITES)
    known = "known suites: cifar10-resnet, cifar10-vgg16, mnist-lenet"
    with pytest.raises(TripwireError, match=known):
        get_suite("cifar100")


def _rows(model: str, detector: str, anomaly: str, metric: str, value: float) -> dict:
    return {
        "suite": "cifar10-resnet", "model": model, "seed": 0, "fast": True, "n_id": 100,
        "versions": {"tripwire": "test"}, "detector": detector, "fitted_detector": detector,
        "params": {}, "anomaly_set": anomaly, "family": "ood", "n_anomaly": 50,
        "anomaly_info": {"n": 50}, "fit_seconds": 1.0, "id_scoring_images_per_second": 1000.0,
        "id_flagged": 0.05, "fitted_on_anomalies": None, "metric": metric, "value": value,
    }  # fmt: skip


def test_report_sets_the_papers_resnet_cells_beside_ours(tmp_path: Path) -> None:
    suite = get_suite("cifar10-resnet")
    rows = [
        _rows("resnet-cifar10", "uniform", "tinyimagenet-crop", "auroc_class_weighted", 0.97),
        _rows("resnet-cifar10", "msp", "tinyimagenet-resize", "auroc", 0.88),
    ]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = write_report(suite, tmp_path, "tripwire bench --suite cifar10-resnet")
    md = text.read_text()
    # Table 2, ResNet: uniform AUROC on TinyIm 98.61, baseline (MSP) 87.13
    assert "| tinyimagenet / auroc (tinyimagenet-crop) | uniform | 98.61 | 97.00" in md
    assert "| tinyimagenet / auroc (tinyimagenet-resize) | msp | 87.13 | 88.00" in md
    assert "| lsun / auroc | msp | 89.66 | set not available here" in md
    assert "| fooling / auroc | uniform | 99.73 | not run" in md
    assert "JPEG-compressed" in md and "rebuilds" in md
    assert "every seed uses the zoo model of seed 0" in md
    # the suite's own deviations: the shared ones, none of the MNIST-only ones
    assert "transductive" in md
    assert "chosen by `research/select_default_cifar.py` on ResNet-44" in md
    assert "Omniglot" not in md
    vgg = dataclasses.replace(get_suite("cifar10-vgg16"), models=("resnet-cifar10",))
    vgg = dataclasses.replace(vgg, paper_model={"resnet-cifar10": "vgg16"})
    md = write_report(vgg, tmp_path, "x").read_text()
    assert "| tinyimagenet / auroc (tinyimagenet-crop) | uniform | 97.54 | 97.00" in md


class TinyCifarNet(nn.Module):
    """A few thousand weights for 3×32×32 inputs, with dropout for KD+BU's MC passes."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(4)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(8 * 8 * 8, 32)
        self.relu2 = nn.ReLU()
        self.drop1 = nn.Dropout(0.3)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.pool1(self.relu1(self.conv1(x))))
        return self.fc2(self.drop1(self.relu2(self.fc1(x))))


@pytest.mark.slow
def test_tiny_cifar_suite_runs_end_to_end_on_stored_weights(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cifar10-resnet suite's machinery (stored weights, one model seed for every run seed,
    the fast subset, KD bandwidth 0.26, FGSM ε 0.05 fits, the paper's cells) on a tiny CNN."""
    from tripwire.data import load_source
    from tripwire.models import zoo
    from tripwire.models.training import train_classifier

    recipe = dataclasses.replace(
        get_recipe("resnet-cifar10"), name="tiny-cifar10", builder=TinyCifarNet, model_kwargs={}
    )
    monkeypatch.setitem(zoo._RECIPES, "tiny-cifar10", recipe)
    model = recipe.build(0)
    train = load_source("cifar10", "train", data_dir).take(1500, seed=0)
    test = load_source("cifar10", "test", data_dir).take(200, seed=0)
    kwargs = {"epochs": 1, "batch_size": 64, "lr": 3e-3, "seed": 0, "progress": False}
    train_classifier(model, train, test, **kwargs)
    card = {"name": "tiny-cifar10", "seed": 0, "test_accuracy": 0.0, "recipe": {}}
    card["weights_digest"] = weights_digest(round_to_half(model))
    stored = tmp_path / "stored"
    write_stored(model, card, stored, half=True)
    monkeypatch.setenv(STORED_ENV, str(stored))
    tiny = Sizes(
        fit=300, calibration=100, id_test=100, attacked=20, per_set=40, fooling_per_class=1,
        fit_anomalies=60,
    )  # fmt: skip
    suite = dataclasses.replace(
        get_suite("cifar10-resnet"),
        models=("tiny-cifar10",),
        paper_model={"tiny-cifar10": "resnet"},
        fast=tiny,
        fast_sets=("tinyimagenet-crop", "fgsm", "bim-a", "gaussian"),
    )
    out, cache = tmp_path / "out", tmp_path / "cache"
    detectors = ["msp", "kd_bu", "knn", "uniform"]
    run = {"seeds": (0, 1), "fast": True, "detectors": detectors, "data_dir": data_dir}
    rows_path = run_suite(suite, out, cache_dir=cache, **run)
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    assert {r["seed"] for r in rows} == {0, 1} and {r["model_seed"] for r in rows} == {0}
    assert {r["anomaly_set"] for r in rows} <= set(suite.fast_sets)
    assert {"tinyimagenet-crop", "fgsm", "gaussian"} <= {r["anomaly_set"] for r in rows}
    # the paper's detector also gets the paper's transductive protocol, beside it
    assert {r["detector"] for r in rows} == {*detectors, "uniform-paper-transductive"}
    kd = next(r for r in rows if r["detector"] == "kd_bu")
    assert kd["params"]["bandwidth"] == 0.26 and kd["fitted_on_anomalies"]
    fgsm = next(r for r in rows if r["anomaly_set"] == "fgsm")
    assert fgsm["anomaly_info"]["kind"] == "fgsm"
    assert not (cache / "models").exists()  # nothing was trained
    # the shared feature pass gives KNN the scores it computes on its own
    stored_model = zoo.load_model("tiny-cifar10", data_dir=data_dir, cache_dir=cache, seed=0)
    fit_part = load_source("cifar10", "train", data_dir).take(300, seed=0)
    id_test = load_source("cifar10", "evaluation", data_dir).take(100, seed=0)
    direct = create_detector("knn").fit(stored_model, fit_part).score(stored_model, id_test)
    shared = np.load(out / "scores" / "tiny-cifar10-seed0-knn.npz")["id"]
    np.testing.assert_allclose(shared, direct.numpy(), rtol=1e-6, atol=1e-6)
    md = write_report(suite, out, "tripwire bench --suite cifar10-resnet --fast")
    text = md.read_text()
    assert "| fgsm / auroc | kd_bu | 75.70 |" in text and "JPEG-compressed" in text
    # without stored weights the suite refuses to train a CIFAR model inside a run
    monkeypatch.setenv(STORED_ENV, str(tmp_path / "empty"))
    with pytest.raises(ModelNotTrainedError, match="neither stored"):
        run_suite(suite, tmp_path / "out2", cache_dir=cache, **run)


def test_paper_file_is_bundled() -> None:
    names = {p.name for p in resources.files("tripwire.bench.paper").iterdir()}
    assert "cifar10.json" in names
