"""The saved-detector format: a folder, a versioned schema for its JSON, one digest over all of
it, an optional keyed signature, and writes that are atomic and locked.

A saved detector is a folder holding

* ``detector.json`` — the detector's name, hyper-parameters, small learned state, the model it
  was fitted for (its weights digest, and a zoo name or entry point *for messages only*), the
  name of its tensors file, and ``digest``: SHA-256 over the canonical JSON (sorted keys, no
  whitespace, without ``digest`` and ``signature``) and the tensors file's SHA-256 together;
* ``state-<16 hex>.safetensors`` — the learned tensors, named by the start of their SHA-256;
* ``.lock`` — held by a process while it writes the folder.

**Reading** never imports, calls or trains anything named in the files. The JSON is parsed
without NaN/Infinity and with a size and depth limit, validated field by field against
`DetectorFile` (pydantic, strict: no type is coerced, no unknown field is accepted), and its
digest checked; the detector's parameters are then validated against its constructor's type
hints and its own rules, and the tensors against the JSON (see `Detector.load`). Any violation
is a `FormatError` naming the field.

The digest catches accidents — a truncated copy, an edited field, tensors from another fit —
not forgery: whoever can write the folder can recompute it. Against forgery, sign with a key the
reader holds: ``save(path, key=…)`` adds ``signature`` = HMAC-SHA256(key, digest), and
``load(path, key=…)`` refuses a file whose signature is missing or wrong.

**Writing** puts the tensors into a new content-named file and the JSON into a temporary file,
both flushed to disk, then renames the JSON over ``detector.json`` — the one atomic step that
commits the save. A process killed at any point leaves the previous detector or the new one,
never a mixture; tensor files no JSON names are removed after the commit. A second process that
writes the same folder meanwhile fails with `DetectorBusyError` instead of silently winning.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    create_model,
)
from safetensors import SafetensorError
from safetensors.torch import load as tensors_from_bytes
from safetensors.torch import save as tensors_to_bytes

from tripwire.errors import FormatError, TripwireError
from tripwire.locking import exclusive_lock
from tripwire.paths import atomic_write

if TYPE_CHECKING:
    from tripwire.detectors.base import Detector

FORMAT = "tripwire-detector"
FORMAT_VERSION = 2
JSON_NAME = "detector.json"
LOCK_NAME = ".lock"
MAX_JSON_BYTES = 16 << 20

_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)
Hex16 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Extent = Annotated[int, Field(ge=1, le=65_536)]


class DetectorBusyError(TripwireError):
    """Another process is writing the same detector folder right now."""


class ModelRecord(BaseModel):
    """The model a detector was fitted for. Only `weights_digest` is ever acted on (the model
    given at scoring time must have it); `name` and `seed` are for messages and for naming a zoo
    model on the command line, never imported, called or trained."""

    model_config = _STRICT
    weights_digest: Hex16
    name: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None


class DetectorFile(BaseModel):
    """The schema of ``detector.json``, format version 2."""

    model_config = _STRICT
    format: Literal["tripwire-detector"]
    format_version: Literal[2]
    tripwire_version: Annotated[str, StringConstraints(max_length=64)]
    detector: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    params: dict[str, JsonValue]
    input_shape: Annotated[list[Extent], Field(min_length=3, max_length=3)]  # C, H, W
    num_classes: Annotated[int, Field(ge=1, le=1_000_000)]
    model: ModelRecord
    calibration_tpr: Annotated[float, Field(gt=0.0, lt=1.0)] | None
    state: dict[str, JsonValue]
    tensors_file: Annotated[str, StringConstraints(pattern=r"^state-[0-9a-f]{16}\.safetensors$")]
    digest: Hex64
    signature: Hex64 | None = None


def canonical_json(doc: dict[str, Any]) -> bytes:
    """The bytes the digest covers: `doc` without ``digest`` and ``signature``, keys sorted, no
    whitespace, ASCII only, no NaN or Infinity."""
    body = {k: v for k, v in doc.items() if k not in ("digest", "signature")}
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def content_digest(doc: dict[str, Any], tensors_sha256: str) -> str:
    """SHA-256 (hex) over the canonical JSON of `doc` and the tensors file's SHA-256."""
    h = hashlib.sha256(b"tripwire-detector/2\n")
    h.update(canonical_json(doc))
    h.update(b"\n" + tensors_sha256.encode())
    return h.hexdigest()


def sign(digest: str, key: bytes) -> str:
    """HMAC-SHA256 of a digest under the user's `key` (hex)."""
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def read_key(path: str | Path) -> bytes:
    """A signing key from a file (its bytes, surrounding whitespace removed; at least 16).

    Raises:
        FormatError: the file is missing, unreadable or holds fewer than 16 bytes.
    """
    try:
        key = Path(path).read_bytes().strip()
    except OSError as e:
        raise FormatError(f"{path}: cannot read the signing key ({e.strerror})") from None
    if len(key) < 16:
        raise FormatError(f"{path}: a signing key needs at least 16 bytes, found {len(key)}")
    return key


# ------------------------------------------------------------------------------------ writing
_held: set[Path] = set()


@contextmanager
def writing(folder: str | Path) -> Iterator[Path]:
    """Hold the write lock of a detector folder (created if missing) for the block.

    Re-entrant within a process, so a command can take it before a long fit and `write_detector`
    take it again at the end. A folder this call created is removed again if the block fails
    before anything was written into it.

    Raises:
        DetectorBusyError: another process holds it.
        FormatError: `folder` exists and is not a folder.
    """
    path = Path(folder).absolute()
    if path in _held:
        yield path
        return
    if path.exists() and not path.is_dir():
        raise FormatError(f"{path}: exists and is not a folder; give a folder for the detector")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / LOCK_NAME).touch()
    except OSError as e:
        raise FormatError(f"{path}: cannot write a detector here ({e.strerror})") from None
    failed = False
    with exclusive_lock(path / LOCK_NAME, wait=False) as held:
        if not held:
            raise DetectorBusyError(
                f"{path}: another process is writing a detector to this folder; wait for it to "
                "finish or choose another folder"
            )
        _held.add(path)
        try:
            yield path
        except BaseException:
            failed = True
            raise
        finally:
            _held.discard(path)
            if failed and created and [p.name for p in path.iterdir()] == [LOCK_NAME]:
                # nothing was written: leave no empty folder behind
                (path / LOCK_NAME).unlink(missing_ok=True)
                path.rmdir()


def write_detector(
    folder: str | Path,
    doc: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    key: bytes | None = None,
) -> Path:
    """Save `doc` (the JSON fields but ``tensors_file``, ``digest`` and ``signature``) and
    `tensors` into `folder`, atomically and under its write lock (see the module docstring)."""
    blob = tensors_to_bytes(tensors)
    tensors_sha256 = hashlib.sha256(blob).hexdigest()
    full = {**doc, "tensors_file": f"state-{tensors_sha256[:16]}.safetensors"}
    full["digest"] = content_digest(full, tensors_sha256)
    if key is not None:
        full["signature"] = sign(full["digest"], key)
    _validated(DetectorFile, full, "the detector to save")  # never write what a read refuses
    with writing(folder) as path:
        for leftover in path.glob(".*.part"):  # of writers killed mid-save (we hold the lock)
            leftover.unlink(missing_ok=True)
        try:
            with atomic_write(path / full["tensors_file"]) as tmp:
                tmp.write_bytes(blob)
            with atomic_write(path / JSON_NAME) as tmp:  # the commit
                tmp.write_text(json.dumps(full, indent=2, sort_keys=True, allow_nan=False))
        except OSError as e:
            raise FormatError(f"{path}: cannot write the detector ({e.strerror})") from None
        for stale in path.glob("state*.safetensors"):
            if stale.name != full["tensors_file"]:
                stale.unlink(missing_ok=True)
    return path


# ------------------------------------------------------------------------------------ reading
def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def read_detector(
    folder: str | Path, key: bytes | None = None
) -> tuple[DetectorFile, dict[str, torch.Tensor]]:
    """Read and check a saved detector folder: the validated JSON and its tensors.

    Readers take no lock: the JSON is replaced in one atomic step, and should a concurrent save
    remove the tensors file the JSON named between the two reads, the JSON is read again.

    Raises:
        FormatError: anything that is not a detector written by `write_detector` — missing
            files, invalid JSON, a field of the wrong type or range (named), a digest or
            signature that does not match, tensors that safetensors refuses.
    """
    path = Path(folder)
    for _ in range(5):
        doc, raw = _read_json(path / JSON_NAME)
        tensor_path = path / doc.tensors_file
        try:
            data = tensor_path.read_bytes()
        except FileNotFoundError:
            continue  # replaced by a concurrent save: read its JSON
        except OSError as e:
            raise FormatError(f"{tensor_path}: cannot read ({e.strerror})") from None
        break
    else:
        raise FormatError(f"{path}: {doc.tensors_file}, named by {JSON_NAME}, is missing")
    if not hmac.compare_digest(content_digest(raw, hashlib.sha256(data).hexdigest()), doc.digest):
        raise FormatError(
            f"{path}: digest does not match the contents of {JSON_NAME} and "
            f"{doc.tensors_file}; the files were modified or damaged (refit, or restore a copy)"
        )
    if key is not None:
        if doc.signature is None:
            raise FormatError(f"{path}: not signed, and a signing key was given")
        if not hmac.compare_digest(sign(doc.digest, key), doc.signature):
            raise FormatError(f"{path}: the signature does not match the key given")
    try:
        tensors = tensors_from_bytes(data)
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:
        raise FormatError(f"{tensor_path}: not a valid safetensors file ({e})") from None
    return doc, tensors


def _read_json(path: Path) -> tuple[DetectorFile, dict[str, Any]]:
    if not path.is_file():
        raise FormatError(f"{path.parent}: not a saved detector ({path.name} is missing)")
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_JSON_BYTES + 1)
    except OSError as e:
        raise FormatError(f"{path}: cannot read ({e.strerror})") from None
    if len(text) > MAX_JSON_BYTES:
        raise FormatError(f"{path}: larger than {MAX_JSON_BYTES >> 20} MiB; not a detector file")
    try:
        # UTF-8 only (RFC 8259): json.loads(bytes) would guess UTF-16/32 and import codecs
        raw = json.loads(text.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise FormatError(f"{path}: JSON nested too deeply; not a detector file") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise FormatError(f"{path}: not a tripwire detector file")
    if raw.get("format_version") != FORMAT_VERSION:
        raise FormatError(
            f"{path}: format version {raw.get('format_version')!r} is not supported (this "
            f"tripwire reads version {FORMAT_VERSION}; refit the detector with it)"
        )
    return _validated(DetectorFile, raw, str(path)), raw


M = TypeVar("M", bound=BaseModel)


def _validated(schema: type[M], data: object, origin: str, within: tuple[str, ...] = ()) -> M:
    """`schema.model_validate(data)`; the first error becomes a FormatError naming its field."""
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        field = ".".join(str(p) for p in (*within, *err["loc"]))
        raise FormatError(
            f"{origin}: field {field!r}: {err['msg']} ({len(e.errors())} problem(s))"
        ) from None
    except RecursionError:
        raise FormatError(f"{origin}: nested too deeply") from None


# ------------------------------------------------------------------------------- parameters
@cache
def params_schema(klass: type[Detector]) -> type[BaseModel]:
    """A strict pydantic model of a detector's stored parameters (`Detector.param_names`), with
    the types, ranges and choices of their declarations (the class's field hints, each resolved
    in the module that declares it): every parameter required, none unknown, none coerced."""
    hints = typing.get_type_hints(klass, include_extras=True)
    fields: dict[str, Any] = {name: (hints.get(name, Any), ...) for name in klass.param_names()}
    return create_model(f"{klass.__name__}Params", __config__=_STRICT, **fields)


def validated_params(klass: type[Detector], params: dict[str, Any], origin: str) -> dict[str, Any]:
    """`params` checked against `klass`'s constructor (types from its hints); JSON lists come
    back as tuples, as hyper-parameter sequences are given.

    Raises:
        FormatError: a parameter is missing, unknown or of the wrong type (named).
    """
    model = _validated(params_schema(klass), params, origin, within=("params",))
    return {k: _tuples(getattr(model, k)) for k in type(model).model_fields}


def _tuples(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value


# ------------------------------------------------------------------------------------ state
_MISSING = object()


def state_field(meta: dict[str, Any], key: str, kind: Any, default: Any = _MISSING) -> Any:
    """``meta[key]`` of a detector's stored state, checked to be of type `kind` (e.g. ``str``,
    ``list[str]``, ``dict[str, float]``) without coercion; `default` where it is absent.

    Raises:
        ValueError: absent without a default, or not of type `kind` (`Detector.load` turns it
            into a `FormatError`).
    """
    if key not in meta:
        if default is _MISSING:
            raise ValueError(f"state.{key} is missing")
        return default
    try:
        # JSON mode: arrays may stand for tuples, integers for floats; nothing else is coerced
        return _adapter(kind).validate_json(json.dumps(meta[key]), strict=True)
    except ValidationError as e:
        raise ValueError(f"state.{key}: {e.errors(include_url=False)[0]['msg']}") from None


@cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)
