"""Learned state, declared once per detector.

A detector declares each attribute that `fit` learns as an annotated field,

    bank_: torch.Tensor = learned(dtype=torch.float64)
    layer_: str = learned()
    fusion_: LogisticFusion = learned()

and `save` / `load` store and restore it from that declaration — how is read off its type:

* ``torch.Tensor``: one tensor of the safetensors file (``T | None``: absent when None);
  `learned` may require its dtype and finite entries, checked at load;
* ``list[torch.Tensor]`` / ``dict[str, torch.Tensor]``: tensors ``key.0, key.1, …`` /
  ``key.name``;
* a stored object — a class with ``state()`` returning (tensors, JSON values) by local names and
  ``from_state(tensors, values)`` (a bank of SVMs, a logistic fusion, ViM's residual space,
  Gram bounds): its tensors under ``key.name``, its values under ``key_name`` (with an empty
  key: under their local names); ``T | None``: absent when None;
* anything else: a JSON value of ``detector.json``'s ``state``, checked to be of the declared
  type without coercion (`tripwire.detectors.fileformat.state_field`).

The key is the attribute's name without its trailing underscore (``stored_as`` overrides it). A
field with a default (``learned(default=…)``) keeps it when a file lacks its key. State that is
more than its parts (a flow's weights, a nested detector) keeps hand-written
`Detector._state_tensors` / `_set_state`, which extend these.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import torch

from tripwire.detectors.fileformat import state_field

_LEARNED = "tripwire.learned"


@dataclasses.dataclass(frozen=True)
class Learned:
    """How one learned attribute is stored: under `key`, with its declared type."""

    name: str
    key: str
    kind: Any
    dtype: torch.dtype | None
    finite: bool
    has_default: bool

    def tensor_key(self, local: str) -> str:
        """Where a stored object's tensor `local` goes."""
        return f"{self.key}.{local}" if self.key else local

    def value_key(self, local: str) -> str:
        """Where a stored object's JSON value `local` goes."""
        return f"{self.key}_{local}" if self.key else local


_NO_DEFAULT: Any = dataclasses.MISSING


def learned(
    *,
    dtype: torch.dtype | None = None,
    finite: bool = False,
    stored_as: str | None = None,
    default: Any = _NO_DEFAULT,
) -> Any:
    """Declare a learned attribute (a field that `fit` sets, not a hyper-parameter).

    Args:
        dtype: for tensors: the dtype a loaded tensor must have.
        finite: for tensors: refuse a loaded tensor with NaN or infinite entries.
        stored_as: the key in the saved files (default: the name without its trailing ``_``).
        default: an immutable value the attribute has before `fit`, and after `load` from a
            file without its key.
    """
    spec = {"dtype": dtype, "finite": finite, "stored_as": stored_as}
    return dataclasses.field(init=False, repr=False, default=default, metadata={_LEARNED: spec})


_DECLARED: dict[type, tuple[Learned, ...]] = {}


def declared(klass: type) -> tuple[Learned, ...]:
    """The learned attributes `klass` declares (its own and its bases'), in declaration order."""
    if klass not in _DECLARED:
        _DECLARED[klass] = _declarations(klass)
    return _DECLARED[klass]


def _declarations(klass: type) -> tuple[Learned, ...]:
    hints = typing.get_type_hints(klass)
    out = []
    for f in dataclasses.fields(klass):
        spec = f.metadata.get(_LEARNED)
        if spec is not None:
            key = spec["stored_as"] if spec["stored_as"] is not None else f.name.rstrip("_")
            has_default = f.default is not dataclasses.MISSING
            out.append(
                Learned(f.name, key, hints[f.name], spec["dtype"], spec["finite"], has_default)
            )
    return tuple(out)


def _optional(kind: Any) -> tuple[Any, bool]:
    """(T, True) for ``T | None``, else (kind, False)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return kind, False


def _is_tensor(kind: Any) -> bool:
    return kind is torch.Tensor


def _is_stored_object(kind: Any) -> bool:
    return isinstance(kind, type) and hasattr(kind, "from_state") and hasattr(kind, "state")


def _is_tensor_list(kind: Any) -> bool:
    return typing.get_origin(kind) is list and typing.get_args(kind) == (torch.Tensor,)


def _is_tensor_dict(kind: Any) -> bool:
    return typing.get_origin(kind) is dict and typing.get_args(kind) == (str, torch.Tensor)


def is_tensor_state(kind: Any) -> bool:
    """Whether a learned attribute of type `kind` goes to the safetensors file."""
    kind = _optional(kind)[0]
    checks = (_is_tensor, _is_stored_object, _is_tensor_list, _is_tensor_dict)
    return any(check(kind) for check in checks)


def tensors_of(obj: object) -> dict[str, torch.Tensor]:
    """The declared learned tensors of `obj`, by key."""
    out: dict[str, torch.Tensor] = {}
    for item in declared(type(obj)):
        kind, _ = _optional(item.kind)
        value = getattr(obj, item.name)
        if value is None or not is_tensor_state(kind):
            continue
        if _is_tensor(kind):
            out[item.key] = value
        elif _is_tensor_list(kind):
            out |= {f"{item.key}.{i}": t for i, t in enumerate(value)}
        elif _is_tensor_dict(kind):
            out |= {f"{item.key}.{k}": t for k, t in value.items()}
        else:
            out |= {item.tensor_key(k): t for k, t in value.state()[0].items()}
    return out


def meta_of(obj: object) -> dict[str, Any]:
    """The declared learned JSON values of `obj`, by key."""
    out: dict[str, Any] = {}
    for item in declared(type(obj)):
        kind, _ = _optional(item.kind)
        value = getattr(obj, item.name)
        if not is_tensor_state(kind):
            out[item.key] = value
        elif _is_stored_object(kind) and value is not None:
            out |= {item.value_key(k): v for k, v in value.state()[1].items()}
    return out


def restore(obj: object, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Set `obj`'s declared learned attributes from what `tensors_of` and `meta_of` stored.

    Raises:
        KeyError, ValueError: an attribute is missing, or of the wrong type or dtype, or not
            finite where declared so (`Detector.load` turns them into a `FormatError`).
    """
    for item in declared(type(obj)):
        kind, optional = _optional(item.kind)
        if item.key not in meta and item.has_default and not is_tensor_state(kind):
            continue
        if not is_tensor_state(kind):
            value: Any = state_field(meta, item.key, item.kind)
        elif _is_tensor(kind):
            value = tensors.get(item.key) if optional else tensors[item.key]
            if value is not None:
                _check_tensor(item, value)
        elif _is_tensor_list(kind):
            value = []
            while f"{item.key}.{len(value)}" in tensors:
                value.append(tensors[f"{item.key}.{len(value)}"])
        elif _is_tensor_dict(kind):
            prefix = f"{item.key}."
            value = {k[len(prefix) :]: t for k, t in tensors.items() if k.startswith(prefix)}
        elif optional and not any(k.startswith(item.tensor_key("")) for k in tensors):
            value = None
        else:
            value = kind.from_state(*_parts(item, tensors, meta))
        setattr(obj, item.name, value)


def _parts(
    item: Learned, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A stored object's tensors and values, by their local names."""
    t, v = item.tensor_key(""), item.value_key("")
    return (
        {k[len(t) :]: x for k, x in tensors.items() if k.startswith(t)},
        {k[len(v) :]: x for k, x in meta.items() if k.startswith(v)},
    )


def _check_tensor(item: Learned, value: torch.Tensor) -> None:
    if item.dtype is not None and value.dtype != item.dtype:
        raise ValueError(f"{item.key} must be {item.dtype}, got {value.dtype}")
    if item.finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{item.key} has non-finite entries")
