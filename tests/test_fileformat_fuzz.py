"""Property-based tests of reading saved detectors: random mutations of ``detector.json`` and of
the tensors never import or run code, never raise anything but a `FormatError` (or, once loaded,
a `TripwireError` when scoring), and never change a flag unless the digest was recomputed."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as tensors_from_bytes
from safetensors.torch import save as tensors_to_bytes

from tiny_world import make_world, trained_world
from tripwire.detectors import Detector, create_detector
from tripwire.detectors.fileformat import JSON_NAME, canonical_json, content_digest
from tripwire.errors import FormatError, TripwireError

EXAMPLES = 600  # per test; two tests: 1,200 cases a run

_watching = False
_events: list[str] = []
_RUNS_CODE = ("os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _watching:
        return
    if event == "import" and args[0] not in sys.modules:
        _events.append(f"import {args[0]}")
    elif event.startswith(_RUNS_CODE) or event in ("exec", "code.__new__"):
        _events.append(event)


sys.addaudithook(_audit)


class Watch:
    """Record, during the block, imports of modules not loaded yet, code objects executed (as a
    newly imported module's body is) and attempts to start processes."""

    def __enter__(self) -> list[str]:
        global _watching
        _events.clear()
        _watching = True
        return _events

    def __exit__(self, *exc: object) -> None:
        global _watching
        _watching = False


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    model, train, val = trained_world()
    x, _ = make_world(48, seed=7)
    out: dict[str, Any] = {"model": model, "x": x, "detectors": {}}
    for name in ("uniform-plus", "msp"):
        det = create_detector(name).fit(model, train).calibrate(model, val)
        folder = det.save(tmp_path_factory.mktemp(name) / "det")
        Detector.load(folder).predict(model, x)  # warm: every module and schema loaded
        (tensors,) = folder.glob("state-*.safetensors")
        out["detectors"][name] = {
            "doc": json.loads((folder / JSON_NAME).read_text()),
            "tensors_name": tensors.name,
            "tensors": tensors.read_bytes(),
            "flags": det.predict(model, x),
        }
    return out


NASTY_TEXT = st.sampled_from(
    ["os:abort", "sys:exit", "code:interact", "builtins:exec", "conv2", "relu1", "../x", "", "7"]
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | NASTY_TEXT,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def json_mutations(draw: st.DrawFn, doc: dict[str, Any]) -> str:
    """The text of `doc` after one random mutation (a value replaced or removed, a key added,
    deep nesting, or the text itself cut or corrupted)."""
    kind = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "nest", "text"]))
    doc = json.loads(json.dumps(doc))
    if kind == "text":
        text = json.dumps(doc)
        cut = draw(st.integers(0, len(text) - 1))
        return draw(
            st.sampled_from(
                [text[:cut], text[:cut] + "\x00" + text[cut + 1 :], text[:cut] + "NaN" + text[cut:]]
            )
        )
    if kind == "nest":
        return '{"format": "tripwire-detector", "format_version": 2, "params": ' + "[" * 50_000
    path = draw(st.sampled_from(_paths(doc)))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if kind == "delete":
        del parent[path[-1]]
    elif kind == "add" and isinstance(parent, dict):
        parent[draw(st.text(max_size=8))] = draw(JSON_VALUES)
    else:
        parent[path[-1]] = draw(JSON_VALUES)
    return json.dumps(doc)


def _write(folder: Path, entry: dict[str, Any], text: str, tensors: bytes, resign: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("state-*.safetensors"):
        old.unlink()
    (folder / entry["tensors_name"]).write_bytes(tensors)
    if resign:
        try:
            doc = json.loads(text)
            doc["digest"] = content_digest(doc, hashlib.sha256(tensors).hexdigest())
            text = json.dumps(doc)
        except (ValueError, TypeError, KeyError, RecursionError):
            pass  # not a JSON object: nothing to sign
    (folder / JSON_NAME).write_text(text)


def _same_content(text: str, doc: dict[str, Any]) -> bool:
    try:
        return canonical_json(json.loads(text)) == canonical_json(doc)
    except (ValueError, TypeError, RecursionError, AttributeError):
        return False


def _check(saved: dict[str, Any], name: str, folder: Path, changed: bool, resigned: bool) -> None:
    entry, model, x = saved["detectors"][name], saved["model"], saved["x"]
    with Watch() as events:
        try:
            det = Detector.load(folder)
        except FormatError:
            det = None
        flags = None
        if det is not None:
            with contextlib.suppress(TripwireError):
                flags = det.predict(model, x)
    assert events == [], events
    if det is not None and not changed:
        assert flags is not None and torch.equal(flags, entry["flags"])
    if det is not None and changed and not resigned:
        pytest.fail("an edit the digest should have caught was loaded")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), name=st.sampled_from(["uniform-plus", "msp"]), resign=st.booleans())
def test_mutated_json(
    saved: dict[str, Any], tmp_path: Path, data: st.DataObject, name: str, resign: bool
) -> None:
    entry = saved["detectors"][name]
    text = data.draw(json_mutations(entry["doc"]))
    folder = tmp_path / "det"
    _write(folder, entry, text, entry["tensors"], resign)
    _check(saved, name, folder, not _same_content(text, entry["doc"]), resign)


@st.composite
def tensor_mutations(draw: st.DrawFn, blob: bytes) -> tuple[bytes, bool]:
    """(the tensors file after one random corruption, whether it is still a safetensors file
    whose digest a forger would recompute)."""
    kind = draw(st.sampled_from(["flip", "cut", "append", "reshape", "drop", "nan", "dtype"]))
    if kind == "flip":
        i = draw(st.integers(0, len(blob) - 1))
        return blob[:i] + bytes([blob[i] ^ draw(st.integers(1, 255))]) + blob[i + 1 :], False
    if kind == "cut":
        return blob[: draw(st.integers(0, len(blob) - 1))], False
    if kind == "append":
        return blob + draw(st.binary(min_size=1, max_size=64)), False
    tensors = dict(tensors_from_bytes(blob))
    key = draw(st.sampled_from(sorted(tensors)))
    t = tensors[key]
    if kind == "reshape" and t.ndim:
        tensors[key] = t.narrow(0, 0, max(0, t.shape[0] - 1)).contiguous()
    elif kind == "drop":
        del tensors[key]
    elif kind == "nan" and t.is_floating_point() and t.numel():
        tensors[key] = t.flatten().index_fill(0, torch.tensor([0]), float("nan")).view_as(t)
    elif kind == "dtype":
        tensors[key] = t.to(torch.float64 if t.dtype != torch.float64 else torch.int64)
    return tensors_to_bytes(tensors), True


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), name=st.sampled_from(["uniform-plus", "msp"]), resign=st.booleans())
def test_corrupted_tensors(
    saved: dict[str, Any], tmp_path: Path, data: st.DataObject, name: str, resign: bool
) -> None:
    entry = saved["detectors"][name]
    if name == "msp":  # msp stores only its thresholds
        assert set(tensors_from_bytes(entry["tensors"])) == {"thresholds_"}
    blob, structured = data.draw(tensor_mutations(entry["tensors"]))
    folder = tmp_path / "det"
    _write(folder, entry, json.dumps(entry["doc"]), blob, resign and structured)
    _check(saved, name, folder, blob != entry["tensors"], resign and structured)


def test_the_watch_sees_imports_and_code_runs(tmp_path: Path, monkeypatch) -> None:
    import importlib

    (tmp_path / "fresh_module_for_the_watch.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with Watch() as events:
        importlib.import_module("json")  # loaded already: not an import
        importlib.import_module("fresh_module_for_the_watch")
        exec("1 + 1")
    # a module's body runs as an "exec" event (the "import" event is not raised on every path)
    assert events == ["exec", "exec"]
