"""A user's own model and files through every command, and the CLI's habits: `--version`,
`tripwire detectors list`, `--param` checked against the detector's signature."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from tripwire.cli import app
from tripwire.detectors import DEFAULT_DETECTOR, Detector, create_detector, list_detectors
from tripwire.detectors.registry import detector_parameters, get_detector_class
from tripwire.errors import FormatError, InvalidInputError
from tripwire.guard import Guard
from tripwire.model_output import ModelOutputError
from tripwire.models.user import load_model_file
from tripwire.models.zoo import ModelNotTrainedError, UnknownModelError

runner = CliRunner()

USER_MODULE = '''
import torch
from torch import nn


def make_net() -> nn.Module:
    """8×8 grey digits → 10 classes, with BatchNorm and a linear head."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10),
    )


class WithAux(nn.Module):
    """Returns (auxiliary output, logits), as some training set-ups do."""

    def __init__(self) -> None:
        super().__init__()
        self.body = make_net()

    def forward(self, x):
        logits = self.body(x)
        return logits.detach() * 0, logits
'''


@pytest.fixture
def user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding the user's `mynet.py` and its weights, as the current folder — and not
    on sys.path, as for the installed `tripwire` command."""
    (tmp_path / "mynet.py").write_text(USER_MODULE)
    namespace: dict[str, object] = {}
    exec(USER_MODULE, namespace)
    save_file(namespace["make_net"]().state_dict(), tmp_path / "mynet.safetensors")  # type: ignore[operator]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "mynet", raising=False)
    return tmp_path


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, f"{args}: {result.output} {result.exception!r}"
    return result.output


def test_a_user_model_goes_through_every_command(user_folder: Path) -> None:
    model = ["--model", "mynet:make_net", "--weights", "mynet.safetensors"]
    _ok(["fit", *model, "--data", "digits8", "--detector", "msp", "--out", "det"])
    _ok(["anomalies", "make", *model, "--kind", "uniform", "--n", "20", "--data", "digits8",
         "--out", "noise.npz"])  # fmt: skip
    _ok(["score", "--detector", "det", *model, "--input", "noise.npz", "--out", "s.csv"])
    with open("s.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20
    _ok(["data", "preview", "noise.npz", "--out", "grid.png", "--n", "4"])
    _ok(["explain", *model, "--input", "noise.npz", "--n", "2", "--out", "explained"])
    assert Path("grid.png").stat().st_size > 0 and len(list(Path("explained").glob("*.png"))) == 2


def test_a_model_returning_a_tuple_takes_output(user_folder: Path) -> None:
    model = ["--model", "mynet:WithAux"]
    args = ["fit", *model, "--data", "digits8", "--detector", "msp", "--out", "det"]
    ambiguous = runner.invoke(app, args)  # two N×10 tensors: 'auto' does not guess
    assert isinstance(ambiguous.exception, ModelOutputError), ambiguous.output
    _ok([*args, "--output", "1"])
    np.savez("x.npz", x=np.zeros((3, 8, 8), np.uint8))
    _ok(["score", "--detector", "det", *model, "--output", "1", "--input", "x.npz", "--out", "s"])
    assert len(Path("s").read_text().splitlines()) == 4


@pytest.mark.parametrize("how", ["script", "trace"])
def test_a_torchscript_file_works_with_detectors_that_read_logits(
    user_folder: Path, how: str
) -> None:
    namespace: dict[str, object] = {}
    exec(USER_MODULE, namespace)
    net = namespace["make_net"]().eval()  # type: ignore[operator]
    compiled = (
        torch.jit.script(net) if how == "script" else torch.jit.trace(net, torch.rand(2, 1, 8, 8))
    )
    torch.jit.save(compiled, "net.ts")
    _ok(["fit", "--model", "net.ts", "--data", "digits8", "--detector", "odin", "--out", "det"])
    assert Detector.load("det").model_ref_ == {"name": "net.ts"}  # never a path
    np.savez("x.npz", x=np.zeros((3, 8, 8), np.uint8))
    _ok(["score", "--detector", "det", "--model", "net.ts", "--input", "x.npz", "--out", "s.csv"])
    refused = runner.invoke(app, ["fit", "--model", "net.ts", "--data", "digits8", "--out", "d2"])
    assert isinstance(refused.exception, InvalidInputError)
    assert "TorchScript" in str(refused.exception) and "msp" in str(refused.exception)
    assert not Path("d2").exists()  # a failed fit leaves no empty --out folder behind


def test_a_torch_export_program_works_with_the_default_detector(user_folder: Path) -> None:
    namespace: dict[str, object] = {}
    exec(USER_MODULE, namespace)
    net = namespace["make_net"]().eval()  # type: ignore[operator]
    example = (torch.rand(2, 1, 8, 8),)
    batch = ({0: torch.export.Dim.DYNAMIC},)
    torch.export.save(torch.export.export(net, example, dynamic_shapes=batch), "net.pt2")
    _ok(["fit", "--model", "net.pt2", "--data", "digits8", "--out", "det"])
    detector = Detector.load("det")
    assert detector.name == DEFAULT_DETECTOR and detector.model_ref_ == {"name": "net.pt2"}
    np.savez("x.npz", x=np.zeros((3, 8, 8), np.uint8))
    _ok(["score", "--detector", "det", "--model", "net.pt2", "--input", "x.npz", "--out", "s.csv"])
    x = torch.rand(5, 1, 8, 8)
    result = Guard(load_model_file("net.pt2"), detector)(x)
    assert result.scores.shape == (5,) and torch.equal(result.predicted, net(x).argmax(1))
    torch.export.save(torch.export.export(net, example), "fixed.pt2")  # batches of 2 only
    refused = runner.invoke(app, ["fit", "--model", "fixed.pt2", "--data", "digits8", "--out", "d"])
    assert isinstance(refused.exception, FormatError) and "Dim.DYNAMIC" in str(refused.exception)


def test_a_torch_save_file_as_model_is_refused_unread(user_folder: Path) -> None:
    namespace: dict[str, object] = {}
    exec(USER_MODULE, namespace)
    torch.save(namespace["make_net"](), "whole.pt")  # type: ignore[operator]
    result = runner.invoke(app, ["fit", "--model", "whole.pt", "--data", "digits8", "--out", "d"])
    assert isinstance(result.exception, FormatError)
    assert "never unpickled" in str(result.exception) and "module:function" in str(result.exception)


def test_anomalies_make_needs_data_for_a_user_model(user_folder: Path) -> None:
    args = ["anomalies", "make", "--model", "mynet:make_net", "--kind", "uniform", "--out", "a.npz"]
    result = runner.invoke(app, args)
    assert isinstance(result.exception, InvalidInputError) and "--data" in str(result.exception)


def test_a_python_file_as_model_says_how_to_name_the_factory(user_folder: Path) -> None:
    result = runner.invoke(app, ["fit", "--model", "mynet.py", "--data", "digits8", "--out", "d"])
    assert isinstance(result.exception, UnknownModelError)
    assert "'mynet:make_net' (module:function)" in str(result.exception)


def test_score_never_trains_a_zoo_model(user_folder: Path) -> None:
    _ok(["fit", "--model", "mynet:make_net", "--data", "digits8", "--detector", "msp",
         "--out", "det"])  # fmt: skip
    np.savez("x.npz", x=np.zeros((3, 8, 8), np.uint8))
    args = ["score", "--detector", "det", "--model", "cnn-digits8", "--cache-dir", "empty"]
    result = runner.invoke(app, [*args, "--input", "x.npz", "--out", "s.csv"])
    assert isinstance(result.exception, ModelNotTrainedError)
    assert "tripwire train cnn-digits8" in str(result.exception)
    assert not Path("empty/models").exists() and not Path("s.csv").exists()


@pytest.mark.parametrize("device", ["nonsense", "meta"])
def test_a_device_this_machine_cannot_use_is_refused_before_any_work(
    tmp_path: Path, device: str
) -> None:
    out = tmp_path / "det"
    result = runner.invoke(app, ["fit", "--device", device, "--out", str(out)])
    assert isinstance(result.exception, InvalidInputError) and "--device" in str(result.exception)
    assert not out.exists()


def test_device_cpu_runs_the_model_there(user_folder: Path) -> None:
    model = ["--model", "mynet:make_net", "--device", "cpu"]
    _ok(["fit", *model, "--data", "digits8", "--detector", "msp", "--out", "det"])
    np.savez("x.npz", x=np.zeros((3, 8, 8), np.uint8))
    _ok(["score", "--detector", "det", *model, "--input", "x.npz", "--out", "s.csv"])


def test_version_and_detectors_list() -> None:
    from tripwire import __version__

    assert _ok(["--version"]).strip() == f"tripwire {__version__}"
    listed = _ok(["detectors", "list"])
    for name in list_detectors():
        assert name in listed
    assert f"{DEFAULT_DETECTOR} (default)" in listed


@pytest.mark.parametrize("name", list_detectors())
def test_detectors_show_lists_every_parameter_with_what_it_accepts(name: str) -> None:
    shown = runner.invoke(app, ["detectors", "show", name], env={"COLUMNS": "400"})
    assert shown.exit_code == 0, shown.output
    for param in get_detector_class(name).param_names():
        row = next((line for line in shown.output.splitlines() if f"│ {param} " in line), None)
        assert row is not None, f"{name}: no row for {param}"
        assert row.split("│")[3].strip(), f"{name}: nothing said of what {param} accepts"


def test_what_a_parameter_accepts_is_said_in_words() -> None:
    from tripwire.cli.detectors import describe
    from tripwire.detectors.fileformat import params_schema

    props = params_schema(get_detector_class("uniform-fusion")).model_json_schema()["properties"]
    assert describe(props["nu"]) == "number in (0, 1]"
    assert describe(props["gamma"]) == "number > 0 or 'scale'"
    assert describe(props["max_per_class"]) == "integer ≥ 5 or None"
    assert describe(props["fusion"]) == "one of 'sum+', 'sum', 'lse', 'max'"
    props = params_schema(get_detector_class("daain")).model_json_schema()["properties"]
    assert describe(props["resolution"]) == "list of integer ≥ 1 (2 of them) or None"
    unknown = runner.invoke(app, ["detectors", "show", "nope"])
    assert unknown.exit_code != 0 and "knn" in unknown.output + str(unknown.exception)


def test_a_parameter_the_detector_lacks_is_a_typed_error_listing_its_parameters(
    tmp_path: Path,
) -> None:
    with pytest.raises(InvalidInputError, match=r"'msp' has no parameter 'temperature'"):
        create_detector("msp", temperature=2)
    with pytest.raises(InvalidInputError, match=r"no parameter 'kk'.*k=50, bank_size=None"):
        create_detector("knn", kk=3)
    out = tmp_path / "never"
    result = runner.invoke(app, ["fit", "--detector", "msp", "--param", "temperature=2",
                                 "--out", str(out)])  # fmt: skip
    assert isinstance(result.exception, InvalidInputError) and not out.exists()


@pytest.mark.parametrize(
    ("name", "params"),
    [("knn", {"k": "abc"}), ("knn", {"k": [5]}), ("uniform-fusion", {"nu": "small"})],
)
def test_a_value_of_the_wrong_type_is_a_typed_error(name: str, params: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError, match=f"{next(iter(params))}: "):
        create_detector(name, **params)


@pytest.mark.parametrize("name", list_detectors())
def test_every_default_passes_the_parameter_check(name: str) -> None:
    """Each detector's own defaults, given explicitly, are accepted as they are."""
    defaults = {k: p.default for k, p in detector_parameters(get_detector_class(name)).items()}
    assert create_detector(name, **defaults).get_params().items() <= defaults.items()
