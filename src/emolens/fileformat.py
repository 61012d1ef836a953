"""The emolens file format: safetensors tensors plus one JSON header, checked before use.

Every file emolens writes for vectors or statistics is a safetensors file whose metadata holds
one JSON object under the key ``"emolens"``. The header names what the file holds (``kind``)
and the version of that kind's layout (``format_version``); each reader declares the fields
it needs with a small schema (:class:`Field`), and :func:`read` checks types and ranges
before any of it is used, so a malformed file gives one :class:`VectorFileError` line naming
the file and the field, never a traceback. No pickle, ever.

Writes go through :func:`emolens.fileio.atomic_path`: a crash leaves the old file or the new
one. A shard of an extraction is one file (not a set of files), so it is replaced as a unit.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "stats.safetensors"
>>> _ = write(path, KIND_STORY, {"labels": ["calm"], "layers": [0, 2]},
...           {"counts": np.array([3])})
>>> header, tensors = read(path, KIND_STORY, {"labels": Field("list[str]"),
...                                            "layers": Field("layers")})
>>> header["labels"], tensors["counts"].tolist()
(['calm'], [3])
>>> read(path, KIND_STORY, {"layers": Field("list[str]")})  # doctest: +ELLIPSIS
Traceback (most recent call last):
emolens.errors.VectorFileError: ...stats.safetensors: header field 'layers' must be a list ...
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emolens.errors import LayerError, VectorFileError
from emolens.fileio import atomic_path

__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "KIND_NEUTRAL",
    "KIND_SHARD",
    "KIND_STORY",
    "KIND_VECTORS",
    "LAYER_CONVENTION",
    "META_KEY",
    "MODEL_FIELDS",
    "Field",
    "canonical",
    "check_kind",
    "check_layers",
    "emolens_version",
    "format_layers",
    "need",
    "read",
    "read_raw",
    "to_json",
    "validate",
    "write",
]

#: Version of the emotion-vector layout (the shipped vectors are version 1).
FORMAT_VERSION = 1
#: The safetensors metadata key that holds the JSON header.
META_KEY = "emolens"
KIND_VECTORS = "emotion_vectors"
KIND_STORY = "story_stats"
KIND_NEUTRAL = "neutral_stats"
KIND_SHARD = "extraction_shard"
#: Each kind of file and the layout version this emolens reads and writes for it.
KINDS: dict[str, int] = {KIND_VECTORS: FORMAT_VERSION, KIND_STORY: 1, KIND_NEUTRAL: 1,
                         KIND_SHARD: 1}
_WHAT = {KIND_VECTORS: "emotion-vector", KIND_STORY: "story statistics",
         KIND_NEUTRAL: "neutral statistics", KIND_SHARD: "extraction shard"}
LAYER_CONVENTION = (
    "layer i = output of decoder block i (0-based) = Hugging Face hidden_states[i+1] = "
    "TransformerLens blocks.i.hook_resid_post"
)
#: Nesting deeper than this in a header is refused (no legitimate header comes close).
MAX_DEPTH = 32


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def emolens_version() -> str:
    """The installed emolens version (``"0+unknown"`` when run from a bare source tree).

    >>> isinstance(emolens_version(), str)
    True
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("emolens")
    except PackageNotFoundError:  # run from a source tree
        import sys

        mod = sys.modules.get("emolens")
        return str(getattr(mod, "__version__", "0+unknown"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def to_json(obj: Any) -> str:
    """Canonical JSON (sorted keys, no NaN or inf; numpy scalars and arrays allowed).

    >>> to_json({"b": np.float32(0.5), "a": np.arange(2)})
    '{"a": [0, 1], "b": 0.5}'
    >>> to_json({"x": float("nan")})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    emolens.errors.VectorFileError: metadata is not JSON-serialisable (no NaN/inf allowed): ...
    """
    try:
        return json.dumps(obj, default=_json_default, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise VectorFileError(
            f"metadata is not JSON-serialisable (no NaN/inf allowed): {exc}") from None


def canonical(obj: Any) -> Any:
    """Round-trip through JSON, so in-memory metadata equals what a reload gives.

    >>> canonical({1: (2, 3)})
    {'1': [2, 3]}
    """
    return json.loads(to_json(obj))


def _depth(obj: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        if isinstance(node, dict):
            stack.extend((v, level + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, level + 1) for v in node)
    return deepest


# --------------------------------------------------------------------------------------------
# layers (a header field shared by every kind)
# --------------------------------------------------------------------------------------------


def check_layers(layers: Iterable[Any]) -> tuple[int, ...]:
    """Layers as a tuple of distinct non-negative ints (LayerError otherwise).

    >>> check_layers([3, np.int64(5)])
    (3, 5)
    >>> check_layers([1, 1])
    Traceback (most recent call last):
    emolens.errors.LayerError: duplicate layers in [1, 1]
    """
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0:
            raise LayerError(f"layers must be non-negative integers, got {layer!r}")
        out.append(int(layer))
    if len(set(out)) != len(out):
        raise LayerError(f"duplicate layers in {out}")
    return tuple(out)


def format_layers(layers: Sequence[int]) -> str:
    """Layers for messages: ``"0-29"`` for a run, else a comma list.

    >>> format_layers([2, 0, 1]), format_layers([1, 5]), format_layers([])
    ('0-2', '1, 5', 'none')
    """
    if not layers:
        return "none"
    s = sorted(layers)
    if s == list(range(s[0], s[-1] + 1)) and len(s) > 2:
        return f"{s[0]}-{s[-1]}"
    return ", ".join(str(x) for x in s)


# --------------------------------------------------------------------------------------------
# header schema
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One header field: its type, whether it must be present, whether null is allowed.

    Types: ``str``, ``int`` (non-negative), ``number`` (finite), ``bool``, ``object``,
    ``list[str]``, ``list[int]`` (non-negative), ``layers`` (distinct non-negative ints),
    ``shard`` (``[i, n]`` with ``0 <= i < n``). An ``object`` may name its own ``fields``.
    """

    type: str
    required: bool = True
    null: bool = False
    fields: Mapping[str, Field] | None = None


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def _type_ok(kind: str, x: Any) -> bool:
    if kind == "str":
        return isinstance(x, str)
    if kind == "int":
        return _is_int(x) and x >= 0
    if kind == "number":
        return _is_number(x)
    if kind == "bool":
        return isinstance(x, bool)
    if kind == "object":
        return isinstance(x, dict)
    if kind == "list[str]":
        return isinstance(x, list) and all(isinstance(v, str) for v in x)
    if kind == "list[int]":
        return isinstance(x, list) and all(_is_int(v) and v >= 0 for v in x)
    if kind == "layers":
        return (isinstance(x, list) and all(_is_int(v) and v >= 0 for v in x)
                and len(set(x)) == len(x))
    if kind == "shard":
        return (isinstance(x, list) and len(x) == 2 and all(_is_int(v) for v in x)
                and 0 <= x[0] < x[1])
    raise ValueError(f"unknown field type {kind!r}")  # a bug in a schema, not in a file


_DESCRIBE = {"str": "a string", "int": "a non-negative integer", "number": "a finite number",
             "bool": "true or false", "object": "an object", "list[str]": "a list of strings",
             "list[int]": "a list of non-negative integers",
             "layers": "a list of distinct non-negative integers",
             "shard": "[i, n] with 0 <= i < n"}


def _short(x: Any) -> str:
    try:
        text = json.dumps(x)
    except (TypeError, ValueError):
        text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def validate(header: Mapping[str, Any], schema: Mapping[str, Field], path: Any,
             hint: str = "", prefix: str = "") -> None:
    """Check ``header`` against ``schema``; one VectorFileError line naming file and field.

    Fields not in the schema are left alone (they are kept as metadata).

    >>> validate({"model": {"hidden_size": "wide"}},
    ...          {"model": Field("object", fields=MODEL_FIELDS)}, "v.safetensors")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    emolens.errors.VectorFileError: v.safetensors: header field 'model.hidden_size' must be ...
    """
    tail = f"; {hint}" if hint else ""
    for name, spec in schema.items():
        where = f"{prefix}{name}"
        if name not in header:
            if spec.required:
                raise VectorFileError(f"{path}: header lacks the field '{where}'{tail}")
            continue
        value = header[name]
        if value is None:
            if spec.null:
                continue
            raise VectorFileError(f"{path}: header field '{where}' is null; it must be "
                                  f"{_DESCRIBE[spec.type]}{tail}")
        if not _type_ok(spec.type, value):
            raise VectorFileError(f"{path}: header field '{where}' must be "
                                  f"{_DESCRIBE[spec.type]}, got {_short(value)}{tail}")
        if spec.fields:
            validate(value, spec.fields, path, hint, prefix=f"{where}.")


#: The fields that identify a model in a header's ``model`` object.
MODEL_FIELDS: dict[str, Field] = {
    "name": Field("str", required=False, null=True),
    "architecture": Field("str", required=False, null=True),
    "n_layers": Field("int", required=False, null=True),
    "hidden_size": Field("int", required=False, null=True),
    "vocab_size": Field("int", required=False, null=True),
    "config_hash": Field("str", required=False, null=True),
}


# --------------------------------------------------------------------------------------------
# reading and writing
# --------------------------------------------------------------------------------------------


def write(path: str | os.PathLike[str], kind: str, header: Mapping[str, Any],
          tensors: Mapping[str, np.ndarray]) -> Path:
    """Write ``tensors`` with ``header`` (plus ``kind`` and its ``format_version``), atomically.

    The header is serialised before anything touches the disk, so bad metadata leaves no
    file behind.
    """
    from safetensors.numpy import save_file

    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    full = {**header, "kind": kind, "format_version": KINDS[kind]}
    metadata = {META_KEY: to_json(full)}
    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp),
                  metadata=metadata)
    return Path(path)


def read_raw(path: str | os.PathLike[str], what: str = "emolens"
             ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(header, tensors) of any emolens safetensors file, kind not checked yet."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise VectorFileError(f"{what} file not found: {path}")
    if not path.is_file():
        raise VectorFileError(f"{what} path is not a file: {path}")
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, TypeError, MemoryError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VectorFileError(
            f"{path} is not a readable safetensors {what} file ({first})") from None
    if META_KEY not in meta:
        raise VectorFileError(f"{path} is a safetensors file but not an emolens {what} file "
                              f"(no '{META_KEY}' metadata)")
    try:
        header = json.loads(meta[META_KEY])
    except json.JSONDecodeError as exc:
        raise VectorFileError(
            f"{path}: the '{META_KEY}' metadata is not valid JSON ({exc})") from None
    except RecursionError:
        header = None
    if header is None or _depth(header) > MAX_DEPTH:
        raise VectorFileError(f"{path}: the '{META_KEY}' metadata is nested deeper than "
                              f"{MAX_DEPTH} levels")
    if not isinstance(header, dict):
        raise VectorFileError(f"{path}: the '{META_KEY}' metadata is not a JSON object")
    return header, tensors


def check_kind(header: Mapping[str, Any], kind: str, path: Any, hint: str = "") -> None:
    """Refuse a file of another kind, or of a layout version this emolens does not read."""
    got = header.get("kind")
    if got != kind:
        tail = f"; {hint}" if hint else ""
        label = got if isinstance(got, str) and got else "an unknown kind of data"
        raise VectorFileError(f"{path} holds {label}, not {kind}{tail}")
    version = header.get("format_version")
    if version != KINDS[kind]:
        raise VectorFileError(
            f"{path} has format_version {_short(version)}; this emolens reads {kind} "
            f"format_version {KINDS[kind]} (rebuild the file or upgrade emolens)")


def read(path: str | os.PathLike[str], kind: str, schema: Mapping[str, Field], *,
         hint: str = "") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a file of ``kind``: header checked against ``schema``, then its tensors.

    ``hint`` is appended to errors about the kind or missing fields (e.g. how to rebuild).
    """
    header, tensors = read_raw(path, _WHAT.get(kind, kind))
    check_kind(header, kind, path, hint)
    validate(header, schema, path, hint)
    return header, tensors


def need(tensors: Mapping[str, np.ndarray], name: str, path: Any) -> np.ndarray:
    """The tensor ``name``, or a VectorFileError saying the file lacks it.

    >>> need({}, "raw", "v.safetensors")
    Traceback (most recent call last):
    emolens.errors.VectorFileError: v.safetensors lacks the tensor 'raw'
    """
    if name not in tensors:
        raise VectorFileError(f"{path} lacks the tensor '{name}'")
    return tensors[name]
