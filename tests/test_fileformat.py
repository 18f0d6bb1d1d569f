"""A saved detector is data: reading one never imports, calls or trains anything it names; every
field is validated; one digest covers the JSON and the tensors; saves are atomic and locked."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tiny_world import make_world, trained_world
from tripwire.detectors import Detector, create_detector
from tripwire.detectors.fileformat import JSON_NAME, DetectorBusyError, content_digest, writing
from tripwire.errors import FormatError, ModelMismatchError
from tripwire.guard import Guard

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    model, train, val = trained_world()
    det = create_detector("uniform-plus").fit(model, train).calibrate(model, val)
    x, _ = make_world(64, seed=5)
    return {"model": model, "det": det, "x": x, "flags": det.predict(model, x)}


def tensors_file(folder: Path) -> Path:
    (path,) = folder.glob("state-*.safetensors")
    return path


def resign(folder: Path, doc: dict[str, Any] | None = None) -> None:
    """Write `doc` (default: the folder's own JSON) with the digest recomputed, as a forger or a
    careless tool would: the digest then no longer stands between the file and the reader."""
    doc = json.loads((folder / JSON_NAME).read_text()) if doc is None else doc
    doc["digest"] = content_digest(
        doc, hashlib.sha256(tensors_file(folder).read_bytes()).hexdigest()
    )
    (folder / JSON_NAME).write_text(json.dumps(doc))


def edited(folder: Path, path: list[Any], value: Any, *, sign: bool = True) -> None:
    """Set one field of the folder's JSON (re-signed unless `sign` is False)."""
    doc = json.loads((folder / JSON_NAME).read_text())
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    if sign:
        resign(folder, doc)
    else:
        (folder / JSON_NAME).write_text(json.dumps(doc))


_DELETE = object()


# ------------------------------------------------------------------------ nothing named is run
@pytest.mark.parametrize("name", ["os:abort", "sys:exit", "code:interact", "evil_module:run"])
def test_score_never_imports_or_calls_the_model_a_file_names(
    name: str, world: dict[str, Any], tmp_path: Path
) -> None:
    folder = world["det"].save(tmp_path / "det")
    edited(folder, ["model", "name"], name)
    (tmp_path / "evil_module.py").write_text(
        "from pathlib import Path\nPath('imported').write_text('ran at import')\n"
        "def run():\n    Path('called').write_text('called')\n"
    )
    np.savez(tmp_path / "x.npz", x=(world["x"][:8].numpy() * 255).astype(np.uint8))
    # `python -m` puts the current folder on sys.path: a module there would run at import
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tripwire",
            "score",
            "--detector",
            "det",
            "--input",
            "x.npz",
            "--out",
            "o.csv",
        ],
        cwd=tmp_path,
        input="import os; os.system('touch interacted')\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "pass that model with --model" in result.stderr
    for marker in ("imported", "called", "interacted", "o.csv"):
        assert not (tmp_path / marker).exists(), marker


def test_score_never_trains_a_zoo_model_a_file_names(world: dict[str, Any], tmp_path: Path) -> None:
    folder = world["det"].save(tmp_path / "det")
    edited(folder, ["model"], {"weights_digest": "0" * 16, "name": "cnn-digits8", "seed": 7})
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 8, 8), np.uint8))
    env = {**os.environ, "TRIPWIRE_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tripwire",
            "score",
            "--detector",
            str(folder),
            "--input",
            str(tmp_path / "x.npz"),
            "--out",
            str(tmp_path / "o.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 2
    assert "tripwire train cnn-digits8 --seed 7" in result.stderr
    assert not (tmp_path / "cache" / "models").exists()


# ------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["model", "seed"], "7", "model.seed"),
        (["calibration_tpr"], _DELETE, "calibration_tpr"),
        (["num_classes"], 10**30, "num_classes"),
        (["num_classes"], -1, "num_classes"),
        (["num_classes"], 500, "num_classes"),  # the thresholds are for 3 classes
        (["input_shape"], [1, 12], "input_shape"),
        (["params", "fusion"], "median", "params"),
        (["params", "pooling"], "none", "params"),
        (["params", "tail"], "0.99", "params.tail"),
        (["params", "nu"], True, "params.nu"),
        (["params", "surprise"], 1, "params.surprise"),
        (["model", "weights"], "/home/me/net.safetensors", "model.weights"),
        (["state", "layer"], ["relu1"], "state"),
        (["state"], [], "state"),
        (["detector"], "../../etc", "detector"),
        (["detector"], "uniform", "params"),  # the params of another detector
    ],
)
def test_invalid_fields_are_named_in_a_format_error(
    path: list[Any], value: Any, field: str, world: dict[str, Any], tmp_path: Path
) -> None:
    folder = world["det"].save(tmp_path / "det")
    edited(folder, path, value)  # re-signed: the schema itself must refuse it
    with pytest.raises(FormatError, match=rf"field '{field}|{field}"):
        Detector.load(folder)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["num_classes"], 500),
        (["params", "pooling"], "mean"),
        (["params", "fusion"], "max"),
        (["state", "layer"], "conv2"),
        (["calibration_tpr"], 0.5),
    ],
)
def test_any_edit_without_the_digest_is_refused(
    path: list[Any], value: Any, world: dict[str, Any], tmp_path: Path
) -> None:
    folder = world["det"].save(tmp_path / "det")
    edited(folder, path, value, sign=False)
    with pytest.raises(FormatError, match="digest does not match"):
        Detector.load(folder)


def test_deep_nesting_and_huge_files_are_refused(world: dict[str, Any], tmp_path: Path) -> None:
    folder = world["det"].save(tmp_path / "det")
    (folder / JSON_NAME).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(FormatError, match="nested too deeply"):
        Detector.load(folder)
    (folder / JSON_NAME).write_text('{"format": "tripwire-detector", "x": "' + "a" * (17 << 20))
    with pytest.raises(FormatError, match="larger than"):
        Detector.load(folder)


def test_thresholds_for_some_classes_only_are_refused(
    world: dict[str, Any], tmp_path: Path
) -> None:
    folder = world["det"].save(tmp_path / "det")
    tensors = load_file(str(tensors_file(folder)))
    tensors["thresholds_"] = tensors["thresholds_"][:2]
    save_file(tensors, str(tensors_file(folder)))
    resign(folder)
    with pytest.raises(FormatError, match="thresholds"):
        Detector.load(folder)


def test_signed_detectors_need_the_key(world: dict[str, Any], tmp_path: Path) -> None:
    key = b"0123456789abcdef-secret"
    folder = world["det"].save(tmp_path / "det", key=key)
    assert torch.equal(
        Detector.load(folder, key=key).predict(world["model"], world["x"]), world["flags"]
    )
    with pytest.raises(FormatError, match="signature does not match"):
        Detector.load(folder, key=b"another key of 16+ bytes")
    edited(folder, ["calibration_tpr"], 0.5)  # a forger recomputes the digest, not the signature
    with pytest.raises(FormatError, match="signature does not match"):
        Detector.load(folder, key=key)
    unsigned = world["det"].save(tmp_path / "plain")
    with pytest.raises(FormatError, match="not signed"):
        Detector.load(unsigned, key=key)


# ------------------------------------------------------------------------- the model's weights
def test_scoring_checks_the_weights_each_time_they_change(world: dict[str, Any]) -> None:
    model, det, x = trained_world()[0], world["det"], world["x"]
    guard = Guard(model, det)
    assert torch.equal(guard(x).is_anomaly, world["flags"])
    with torch.no_grad():
        model.conv1.weight.add_(0.05)  # after the guard was built
    for call in (lambda: guard(x), lambda: det.score(model, x), lambda: det.predict(model, x)):
        with pytest.raises(ModelMismatchError):
            call()
    assert det.score(model, x, verify_model=False).shape == (len(x),)  # the explicit opt-out
    with torch.no_grad():
        model.conv1.weight.sub_(0.05)
    model.load_state_dict(trained_world()[0].state_dict())
    assert torch.equal(guard(x).is_anomaly, world["flags"])


# --------------------------------------------------------------------------- atomic, locked
def _save_killed_at(det: Detector, target: Path, kill_at: int) -> int:
    """Save `det` to `target` in a forked child that SIGKILLs itself just before its
    `kill_at`-th file-system step; returns the child's exit status (0: it finished)."""
    pid = os.fork()
    if pid:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    steps = 0

    def step(fn: Any) -> Any:
        def wrapped(*a: Any, **k: Any) -> Any:
            nonlocal steps
            steps += 1
            if steps == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **k)

        return wrapped

    for owner, name in [
        (os, "open"),
        (os, "fsync"),
        (os, "replace"),
        (os, "unlink"),
        (Path, "write_bytes"),
        (Path, "write_text"),
        (Path, "unlink"),
        (Path, "mkdir"),
        (Path, "touch"),
    ]:
        setattr(owner, name, step(getattr(owner, name)))
    try:
        det.save(target)
    finally:
        os._exit(0)


def test_a_save_killed_at_any_step_leaves_a_loadable_detector(
    world: dict[str, Any], tmp_path: Path
) -> None:
    model, det, x = world["model"], world["det"], world["x"]
    other = create_detector("msp").fit(model, trained_world()[1])
    other.calibrate(model, trained_world()[2])
    outcomes = []
    for kill_at in range(1, 60):
        target = det.save(tmp_path / "det")  # the previous detector in place
        status = _save_killed_at(other, target, kill_at)
        loaded = Detector.load(target)  # never a FormatError, whatever step the kill hit
        outcomes.append(loaded.name)
        expected = world["flags"] if loaded.name == "uniform-plus" else other.predict(model, x)
        assert torch.equal(loaded.predict(model, x), expected)
        if status == 0:
            break
        assert status == -signal.SIGKILL
    else:
        pytest.fail("the save never completed")
    assert kill_at > 5, "the save should take several steps"
    assert outcomes[0] == "uniform-plus" and outcomes[-1] == "msp"


_LOOP_SAVER = textwrap.dedent(
    """
    import sys
    from tripwire.detectors import Detector
    from tripwire.detectors.fileformat import DetectorBusyError
    det, busy = Detector.load(sys.argv[1]), 0
    for _ in range(int(sys.argv[3])):
        try:
            det.save(sys.argv[2])
        except DetectorBusyError:
            busy += 1
    print(busy)
    """
)


@pytest.mark.slow
def test_concurrent_saves_never_tear_a_read(world: dict[str, Any], tmp_path: Path) -> None:
    model, det = world["model"], world["det"]
    msp = create_detector("msp").fit(model, trained_world()[1])
    msp.calibrate(model, trained_world()[2])
    sources = [det.save(tmp_path / "a"), msp.save(tmp_path / "b")]
    target = det.save(tmp_path / "target")
    savers = [
        subprocess.Popen(
            [sys.executable, "-c", _LOOP_SAVER, str(s), str(target), "60"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for s in sources
    ]
    reads, torn, names = 0, 0, set()
    while any(p.poll() is None for p in savers):
        try:
            names.add(Detector.load(target).name)
        except FormatError:
            torn += 1
        reads += 1
    busy = [int(p.communicate()[0]) for p in savers]
    assert all(p.returncode == 0 for p in savers)
    assert torn == 0, f"{torn} of {reads} reads saw a half-written detector"
    assert reads > 20 and names <= {"uniform-plus", "msp"}
    assert Detector.load(target).name in names | {"uniform-plus"}
    assert sum(busy) < 120  # some saves got through


def test_a_second_writer_fails_with_a_clear_message(world: dict[str, Any], tmp_path: Path) -> None:
    folder = world["det"].save(tmp_path / "det")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from tripwire.detectors.fileformat import writing\n"
            "with writing(sys.argv[1]):\n    print('held', flush=True); time.sleep(30)",
            str(folder),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DetectorBusyError, match="another process is writing"):
            world["det"].save(folder)
        assert Detector.load(folder).name == "uniform-plus"  # readers are not blocked
    finally:
        holder.kill()
        holder.wait()
    with writing(folder):  # re-entrant within one process
        world["det"].save(folder)


def test_a_file_where_the_folder_should_be_is_a_format_error(
    world: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "det").write_text("not a folder")
    with pytest.raises(FormatError, match="not a folder"):
        world["det"].save(tmp_path / "det")


def test_concurrent_writers_of_one_cache_file_do_not_share_a_temporary_name(
    tmp_path: Path,
) -> None:
    from tripwire.paths import atomic_write

    target = tmp_path / "set.npz"
    with atomic_write(target) as a, atomic_write(target) as b:
        assert a != b
        a.write_text("a")
        b.write_text("b")
    assert target.read_text() == "a"  # the last to finish wins, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.npz"]


@pytest.mark.slow
def test_two_processes_make_the_same_anomaly_set_at_once(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, torch
        from tiny_world import trained_world
        from tripwire.anomalies import make_anomalies
        model = trained_world()[0]
        made = make_anomalies("uniform", model, n=20000, shape=[1, 12, 12], seed=0,
                              cache_dir=sys.argv[1])
        print(len(made))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    for trial in range(2):
        cache = tmp_path / f"cache{trial}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(cache)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
            assert out.strip() == "20000"
        assert [p.suffix for p in (cache / "anomalies").iterdir()] == [".npz"]


# -------------------------------------------------------------------------- typed bad input
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_dtypes_are_cast_to_the_models(
    dtype: torch.dtype, world: dict[str, Any]
) -> None:
    det, model, x = world["det"], world["model"], world["x"]
    assert torch.equal(det.predict(model, x.to(dtype)), det.predict(model, x.to(dtype).float()))


def test_scoring_reads_an_iterable_of_batches(world: dict[str, Any]) -> None:
    det, model, x = world["det"], world["model"], world["x"]
    loader = [(x[i : i + 10], torch.zeros(10)) for i in range(0, len(x), 10)]
    # float32 sums in another order per batch size: equal to ≈ 1e-5 of the scores' scale
    assert torch.allclose(det.score(model, loader, batch_size=4), det.score(model, x), atol=2e-4)
