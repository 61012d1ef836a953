"""Emotion directions and the vector file (pure numpy, no model code).

An :class:`EmotionVectors` file holds, per emotion and layer, a unit direction (the denoised
difference of means), the raw difference of means, the residual-stream norm of each layer on
neutral text (the unit of steering strength), the training centre and the metadata that says
which model, corpus and settings made it. ``vecs["calm"]`` is a :class:`Direction` that keeps
the layers' residual scales and the model's identity, so it can steer and be checked alone.

Layer convention: ``layer i`` is the output of decoder block ``i`` (0-based), i.e. Hugging Face
``hidden_states[i + 1]`` and TransformerLens ``blocks.i.hook_resid_post``.

Building vectors from a corpus is :mod:`emolens.extract`; the file layout is
:mod:`emolens.fileformat`.

>>> vecs
EmotionVectors(6 emotions, layers 0-3, d=32, model='tiny-llama')
>>> calm = vecs["calm"]
>>> calm, calm.width, calm.residual_scale(2) == vecs.residual_scale(2)
(Direction('calm', layers 0-3, scaled), 32, True)
>>> vecs.check_model(lm)  # the model these vectors were made for: no error
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emolens import fileformat
from emolens.errors import EmolensError, LayerError, SteeringError, VectorFileError
from emolens.fileformat import Field, format_layers
from emolens.head import ReadoutHead
from emolens.modelcheck import check_fit, check_model

__all__ = ["Direction", "EmotionVectors"]

#: What a vector file's header must hold (other keys are kept as metadata, unchecked).
VECTOR_SCHEMA: dict[str, Field] = {
    "emotions": Field("list[str]"),
    "layers": Field("layers"),
    "model": Field("object", required=False, null=True, fields=fileformat.MODEL_FIELDS),
    "token_skip": Field("int", required=False),
    "recommended_layer": Field("int", required=False, null=True),
    "layer_scores": Field("object", required=False, null=True),
    "corpus_fingerprint": Field("str", required=False),
    "denoise": Field("object", required=False),
    "n_texts": Field("object", required=False),
    "n_tokens": Field("object", required=False),
    "n_heldout": Field("int", required=False),
    "emolens_version": Field("str", required=False),
    "created": Field("str", required=False),
    "layer_convention": Field("str", required=False),
    "head": Field("object", required=False, null=True,
                  fields={"layers": Field("layers"), "kind": Field("str")}),
}


def _as_layer(layer: Any) -> int:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise LayerError(f"a layer must be an integer block index, got {layer!r}")
    return int(layer)


# --------------------------------------------------------------------------------------------
# one direction
# --------------------------------------------------------------------------------------------


def _wrap(name: str) -> str:
    return f"({name})" if any(c in name for c in "+-*/ ") else name


def _fmt_scalar(x: float) -> str:
    return f"{x:g}"


def _usable(x: Any) -> bool:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return False
    return math.isfinite(v) and v > 0


@dataclass(eq=False)
class Direction:
    """A named vector per layer, with the residual scale of each layer and the model it fits.

    ``scales[layer]`` is the median residual-stream norm at that layer on neutral text (the
    unit of steering strength: ``strength=0.1`` adds 0.1 of it), ``mean_scales`` the mean
    norm; ``model`` the fingerprint of the model the direction was measured on. A direction
    taken from a vector file (``vecs["calm"]``) carries all three; one built by hand carries
    what it is given.

    Arithmetic (``+ - * /``, unary minus, :meth:`normalized`) keeps the scales: a sum or
    difference keeps the layers where both operands have one (their mean, which is the same
    value for directions of one file). Results of arithmetic are not unit length; call
    :meth:`normalized` for that.

    >>> a = Direction("happy", {3: np.array([1.0, 0.0], np.float32)}, scales={3: 8.0})
    >>> b = Direction("sad", {3: np.array([0.0, 1.0], np.float32)}, scales={3: 8.0})
    >>> d = a - b
    >>> d.name, d.at(3).tolist(), (2 * d).name, (-b).at(3).tolist()
    ('happy-sad', [1.0, -1.0], '2*(happy-sad)', [-0.0, -1.0])
    >>> round(float(np.linalg.norm(d.normalized().at(3))), 6), d.normalized().residual_scale(3)
    (1.0, 8.0)
    >>> (vecs["calm"] - vecs["sad"]).scales == vecs["calm"].scales
    True
    """

    name: str
    per_layer: dict[int, np.ndarray]
    scales: dict[int, float] = field(default_factory=dict)
    mean_scales: dict[int, float] = field(default_factory=dict)
    model: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        fixed: dict[int, np.ndarray] = {}
        width = None
        for layer, vec in self.per_layer.items():
            arr = np.asarray(vec)
            if arr.ndim != 1:
                raise SteeringError(f"direction {self.name!r}: layer {layer} vector must be 1-D")
            if width is not None and arr.shape[0] != width:
                raise SteeringError(f"direction {self.name!r}: layers have different widths")
            width = arr.shape[0]
            fixed[_as_layer(layer)] = arr
        self.per_layer = dict(sorted(fixed.items()))
        self.scales = self._check_scales(self.scales, "scales")
        self.mean_scales = self._check_scales(self.mean_scales, "mean_scales")
        self.model = dict(self.model) if self.model else None

    def _check_scales(self, scales: Mapping[int, float], what: str) -> dict[int, float]:
        out = {}
        for layer, value in scales.items():
            layer = _as_layer(layer)
            if layer not in self.per_layer:
                raise SteeringError(f"direction {self.name!r}: {what} names layer {layer}, "
                                    f"which the direction lacks")
            if not _usable(value):
                raise SteeringError(f"direction {self.name!r}: residual scale at layer {layer} "
                                    f"must be a positive finite number, got {value!r}")
            out[layer] = float(value)
        return dict(sorted(out.items()))

    def __repr__(self) -> str:
        tail = ", scaled" if self.scales and set(self.scales) == set(self.per_layer) else ""
        return f"Direction({self.name!r}, layers {format_layers(self.layers)}{tail})"

    @property
    def layers(self) -> tuple[int, ...]:
        """Layers present, ascending."""
        return tuple(self.per_layer)

    @property
    def width(self) -> int:
        """Length of the vectors (the model's hidden size); 0 for a direction with no layers.

        >>> vecs["calm"].width
        32
        """
        return int(next(iter(self.per_layer.values())).shape[0]) if self.per_layer else 0

    def at(self, layer: int) -> np.ndarray:
        """The vector at ``layer``."""
        layer = _as_layer(layer)
        if layer not in self.per_layer:
            raise LayerError(f"direction {self.name!r} has no layer {layer}; it has layers "
                             f"{format_layers(self.layers)}")
        return self.per_layer[layer]

    def residual_scale(self, layer: int, robust: bool = True) -> float:
        """Residual-stream norm at ``layer`` (median if ``robust``, else mean).

        A missing scale raises SteeringError rather than silently scaling by 0.

        >>> vecs["calm"].residual_scale(1) == float(vecs.norm_median[1])
        True
        >>> Direction("x", {1: np.ones(2)}).residual_scale(1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        emolens.errors.SteeringError: direction 'x' carries no median residual scale ...
        """
        self.at(layer)
        table = self.scales if robust else self.mean_scales
        if int(layer) not in table:
            kind = "median" if robust else "mean"
            raise SteeringError(f"direction {self.name!r} carries no {kind} residual scale for "
                                f"layer {layer}; take it from a vector file (vecs['calm']), "
                                "or pass scale=")
        return table[int(layer)]

    def check_width(self, d: int) -> None:
        """Raise VectorFileError unless the vectors are ``d`` wide (a model's hidden size).

        >>> vecs["calm"].check_width(64)
        Traceback (most recent call last):
        emolens.errors.VectorFileError: direction 'calm' is 32 wide; the model's hidden size is 64
        """
        if self.per_layer and self.width != int(d):
            raise VectorFileError(f"direction {self.name!r} is {self.width} wide; the model's "
                                  f"hidden size is {int(d)}")

    def check_model(self, model: Any) -> None:
        """Raise VectorFileError naming both models unless this direction fits ``model``.

        ``model`` is a model with ``.fingerprint()`` or a fingerprint dict. Compared: the
        stored model identity (when the direction has one), the width and the deepest layer.

        >>> vecs["calm"].check_model(lm)
        >>> vecs["calm"].check_model({"name": "wide", "hidden_size": 64, "n_layers": 4})
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        emolens.errors.VectorFileError: direction 'calm' was built for tiny-llama (...), not ...
        """
        stored = dict(self.model or {})
        if self.per_layer and stored.get("hidden_size") is None:
            stored["hidden_size"] = self.width
        check_fit(stored, self.layers, model, f"direction {self.name!r} was")

    # ---- arithmetic -------------------------------------------------------------------------

    def _derived(self, name: str, per_layer: dict[int, np.ndarray],
                 scales: dict[int, float] | None = None,
                 mean_scales: dict[int, float] | None = None,
                 model: dict[str, Any] | None = None) -> Direction:
        return Direction(name, per_layer,
                         dict(self.scales) if scales is None else scales,
                         dict(self.mean_scales) if mean_scales is None else mean_scales,
                         self.model if model is None else model)

    def _combine(self, other: Direction, op: str) -> Direction:
        if not isinstance(other, Direction):
            return NotImplemented
        if set(self.per_layer) != set(other.per_layer):
            raise LayerError(f"cannot combine {self.name!r} (layers {format_layers(self.layers)})"
                             f" with {other.name!r} (layers {format_layers(other.layers)})")
        if self.width != other.width:
            raise SteeringError(f"cannot combine {self.name!r} ({self.width} wide) with "
                                f"{other.name!r} ({other.width} wide)")
        if self.model and other.model:
            check_model(other.model, self.model, f"direction {other.name!r} was")
        model = self.model or other.model

        def both(a: dict[int, float], b: dict[int, float]) -> dict[int, float]:
            return {x: (a[x] + b[x]) / 2 if a[x] != b[x] else a[x] for x in a if x in b}

        scales = both(self.scales, other.scales)
        means = both(self.mean_scales, other.mean_scales)
        if op == "+":
            vecs = {x: v + other.per_layer[x] for x, v in self.per_layer.items()}
            return self._derived(f"{self.name}+{other.name}", vecs, scales, means, model)
        vecs = {x: v - other.per_layer[x] for x, v in self.per_layer.items()}
        return self._derived(f"{self.name}-{_wrap(other.name)}", vecs, scales, means, model)

    def __add__(self, other: Direction) -> Direction:
        return self._combine(other, "+")

    def __sub__(self, other: Direction) -> Direction:
        return self._combine(other, "-")

    def __neg__(self) -> Direction:
        return self._derived(f"-{_wrap(self.name)}", {x: -v for x, v in self.per_layer.items()})

    def __mul__(self, scalar: float) -> Direction:
        if isinstance(scalar, Direction) or not np.isscalar(scalar):
            return NotImplemented
        s = float(scalar)
        return self._derived(f"{_fmt_scalar(s)}*{_wrap(self.name)}",
                             {x: (v * s).astype(v.dtype) for x, v in self.per_layer.items()})

    __rmul__ = __mul__

    def __truediv__(self, scalar: float) -> Direction:
        if isinstance(scalar, Direction) or not np.isscalar(scalar):
            return NotImplemented
        s = float(scalar)
        if s == 0:
            raise SteeringError(f"cannot divide direction {self.name!r} by zero")
        return self._derived(f"{_wrap(self.name)}/{_fmt_scalar(s)}",
                             {x: (v / s).astype(v.dtype) for x, v in self.per_layer.items()})

    def normalized(self) -> Direction:
        """Unit length at every layer (same name, same scales); a zero vector is an error.

        >>> u = (vecs["calm"] - vecs["sad"]).normalized()
        >>> round(float(np.linalg.norm(u.at(0))), 5), u.residual_scale(0) > 0
        (1.0, True)
        """
        out = {}
        for layer, v in self.per_layer.items():
            n = float(np.linalg.norm(v.astype(np.float64)))
            if not math.isfinite(n) or n == 0:
                raise SteeringError(f"direction {self.name!r} has zero or non-finite length at "
                                    f"layer {layer}")
            out[layer] = (v / n).astype(v.dtype)
        return self._derived(self.name, out)


# --------------------------------------------------------------------------------------------
# the vector file
# --------------------------------------------------------------------------------------------


def _readonly_f32(x: Any) -> np.ndarray:
    arr = np.array(x, dtype=np.float32, copy=True, order="C")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class EmotionVectors:
    """Unit emotion directions per layer, with raw vectors, residual norms and metadata.

    Arrays are read-only; :meth:`subset` and :meth:`with_meta` return new objects.
    :func:`emolens.extract.build_vectors` makes them from sufficient statistics.

    >>> len(vecs), "calm" in vecs, vecs.default_layer, vecs.matrix(1).shape
    (6, True, 2, (6, 32))
    >>> bool(np.allclose(np.diag(vecs.cosine_matrix(0)), 1.0))
    True
    >>> (vecs["happy"] - vecs["sad"]).name
    'happy-sad'
    """

    emotions: tuple[str, ...]
    layers: tuple[int, ...]
    directions: np.ndarray
    raw: np.ndarray
    norm_mean: np.ndarray
    norm_median: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    #: Mean pooled training activation over emotions, [L, d]: subtracted before classifying.
    center: np.ndarray | None = None
    #: A calibrated read-out (shrinkage LDA) beside the directions, or None.
    head: ReadoutHead | None = None

    def __post_init__(self) -> None:
        emotions = tuple(str(x) for x in self.emotions)
        if self.head is not None and (self.head.weight.shape[1:] != (
                len(emotions), np.shape(self.directions)[2])
                or not set(self.head.layers) <= set(self.layers)):
            raise VectorFileError(f"read-out head of shape {self.head.weight.shape} at layers "
                                  f"{list(self.head.layers)} does not fit these vectors")
        if self.center is not None:
            center = _readonly_f32(self.center)
            if center.shape != (len(tuple(self.layers)), np.shape(self.directions)[2]):
                raise VectorFileError(f"center has shape {center.shape}, expected [L, d]")
            object.__setattr__(self, "center", center)
        layers = fileformat.check_layers(self.layers)
        if len(set(emotions)) != len(emotions):
            raise VectorFileError("duplicate emotion names")
        directions = _readonly_f32(self.directions)
        raw = _readonly_f32(self.raw)
        n_e, n_l = len(emotions), len(layers)
        if directions.ndim != 3 or directions.shape[:2] != (n_e, n_l):
            raise VectorFileError(f"directions have shape {directions.shape}, expected "
                                  f"({n_e}, {n_l}, d)")
        if raw.shape != directions.shape:
            raise VectorFileError(f"raw has shape {raw.shape}, directions {directions.shape}")
        norm_mean = _readonly_f32(self.norm_mean).reshape(-1)
        norm_median = _readonly_f32(self.norm_median).reshape(-1)
        if norm_mean.shape != (n_l,) or norm_median.shape != (n_l,):
            raise VectorFileError("norm_mean and norm_median need one value per layer")
        meta = fileformat.canonical(dict(self.meta))
        object.__setattr__(self, "emotions", emotions)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "directions", directions)
        object.__setattr__(self, "raw", raw)
        object.__setattr__(self, "norm_mean", norm_mean)
        object.__setattr__(self, "norm_median", norm_median)
        object.__setattr__(self, "meta", meta)
        object.__setattr__(self, "_eindex", {e: i for i, e in enumerate(emotions)})
        object.__setattr__(self, "_lindex", {x: i for i, x in enumerate(layers)})

    # ---- container protocol -----------------------------------------------------------------

    def __repr__(self) -> str:
        model = (self.meta.get("model") or {}).get("name", "?")
        return (f"EmotionVectors({len(self.emotions)} emotions, layers "
                f"{format_layers(self.layers)}, d={self.d}, model={model!r})")

    def __len__(self) -> int:
        return len(self.emotions)

    def __iter__(self) -> Iterator[str]:
        return iter(self.emotions)

    def __contains__(self, emotion: object) -> bool:
        try:
            return emotion in self._eindex  # type: ignore[attr-defined]
        except TypeError:  # unhashable
            return False

    def index(self, emotion: str) -> int:
        """Row of ``emotion`` in :attr:`directions` (SteeringError if unknown).

        >>> vecs.index("happy")
        2
        """
        try:
            return self._eindex[emotion]  # type: ignore[attr-defined]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(emotion), self.emotions, n=3, cutoff=0.6)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise SteeringError(f"unknown emotion {emotion!r} ({len(self.emotions)} in this "
                                f"file{hint})") from None

    def _scales(self, norms: np.ndarray) -> dict[int, float]:
        return {x: float(norms[li]) for li, x in enumerate(self.layers) if _usable(norms[li])}

    def __getitem__(self, emotion: str) -> Direction:
        """The emotion's unit :class:`Direction`, with this file's residual scales and model."""
        e = self.index(emotion)
        return Direction(emotion, {x: self.directions[e, li].copy()
                                   for li, x in enumerate(self.layers)},
                         self._scales(self.norm_median), self._scales(self.norm_mean),
                         self.meta.get("model") or None)

    def random_direction(self, seed: int = 0, name: str = "random") -> Direction:
        """A random unit direction at every layer, scaled like this file's (a control).

        >>> r = vecs.random_direction(seed=1)
        >>> r.layers == vecs.layers, r.residual_scale(2) == vecs.residual_scale(2)
        (True, True)
        """
        rng = np.random.default_rng(seed)
        per_layer = {}
        for x in self.layers:
            v = rng.normal(size=self.d)
            per_layer[x] = (v / np.linalg.norm(v)).astype(np.float32)
        return Direction(name, per_layer, self._scales(self.norm_median),
                         self._scales(self.norm_mean), self.meta.get("model") or None)

    @property
    def d(self) -> int:
        """Hidden size."""
        return int(self.directions.shape[2])

    # ---- per-layer access -------------------------------------------------------------------

    def layer_index(self, layer: int) -> int:
        """Position of model layer ``layer`` in :attr:`layers` (LayerError if absent)."""
        layer = _as_layer(layer)
        try:
            return self._lindex[layer]  # type: ignore[attr-defined]
        except KeyError:
            raise LayerError(f"layer {layer} is not in this vector file; it has layers "
                             f"{format_layers(self.layers)}") from None

    def matrix(self, layer: int) -> np.ndarray:
        """Unit vectors at ``layer``, ``[E, d]`` float32 (read-only view)."""
        return self.directions[:, self.layer_index(layer)]

    def cosine_matrix(self, layer: int) -> np.ndarray:
        """Pairwise cosine similarity of the emotion vectors at ``layer``, ``[E, E]``."""
        m = self.matrix(layer).astype(np.float64)
        m = m / np.linalg.norm(m, axis=1, keepdims=True)
        return m @ m.T

    def residual_scale(self, layer: int, robust: bool = True) -> float:
        """Residual-stream norm at ``layer`` on neutral text (median if ``robust``, else mean).

        A zero, NaN or missing norm raises SteeringError rather than silently scaling by 0.

        >>> vecs.residual_scale(0) > 0
        True
        """
        li = self.layer_index(layer)
        value = float((self.norm_median if robust else self.norm_mean)[li])
        if not math.isfinite(value) or value <= 0:
            kind = "median" if robust else "mean"
            raise SteeringError(f"no usable {kind} residual norm for layer {layer} (got "
                                f"{value}); rebuild the vectors with a neutral corpus")
        return value

    @property
    def default_layer(self) -> int:
        """``meta['recommended_layer']`` if stored, else the stored layer nearest 2/3 depth."""
        rec = self.meta.get("recommended_layer")
        if rec is not None and int(rec) in self._lindex:  # type: ignore[attr-defined]
            return int(rec)
        n_layers = (self.meta.get("model") or {}).get("n_layers") or (max(self.layers) + 1)
        target = 2.0 * n_layers / 3.0
        return min(self.layers, key=lambda x: (abs(x - target), x))

    # ---- the model check --------------------------------------------------------------------

    def check_model(self, model: Any) -> None:
        """Raise VectorFileError naming both models unless these vectors fit ``model``.

        ``model`` is a model with ``.fingerprint()`` (a LanguageModel) or a fingerprint dict.
        Compared: the stored model's architecture, layer count, width, vocabulary and config
        hash (where both sides know them), the vectors' own width and their deepest layer.

        >>> vecs.check_model(lm)
        >>> vecs.check_model({"name": "other", "n_layers": 4, "hidden_size": 64})
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        emolens.errors.VectorFileError: vectors were built for tiny-llama (...), not for other ...
        """
        stored = dict(self.meta.get("model") or {})
        if stored.get("hidden_size") is None:
            stored["hidden_size"] = self.d
        check_fit(stored, self.layers, model, "vectors were")

    # ---- derived objects --------------------------------------------------------------------

    def subset(self, emotions: Iterable[str]) -> EmotionVectors:
        """The given emotions, in that order (vectors are not re-centred).

        >>> vecs.subset(["sad", "calm"]).emotions
        ('sad', 'calm')
        """
        names = list(emotions)
        idx = [self.index(e) for e in names]
        return EmotionVectors(tuple(names), self.layers, self.directions[idx], self.raw[idx],
                              self.norm_mean, self.norm_median, copy.deepcopy(self.meta),
                              self.center, self.head.subset(idx) if self.head else None)

    def with_meta(self, **kv: Any) -> EmotionVectors:
        """A copy with ``meta`` updated by ``kv`` (e.g. ``recommended_layer=20``).

        >>> vecs.with_meta(recommended_layer=1).default_layer
        1
        """
        meta = copy.deepcopy(self.meta)
        meta.update(kv)
        return EmotionVectors(self.emotions, self.layers, self.directions, self.raw,
                              self.norm_mean, self.norm_median, meta, self.center, self.head)

    # ---- files ------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write safetensors (directions, raw, norms, centre + JSON header), atomically.

        >>> import tempfile, pathlib
        >>> p = vecs.save(pathlib.Path(tempfile.mkdtemp()) / "v.safetensors")
        >>> EmotionVectors.load(p, expect_model=lm).emotions == vecs.emotions
        True
        """
        header = dict(self.meta)
        header.update(emotions=list(self.emotions), layers=list(self.layers))
        tensors = {"directions": self.directions, "raw": self.raw, "norm_mean": self.norm_mean,
                   "norm_median": self.norm_median}
        if self.center is not None:
            tensors["center"] = self.center
        if self.head is not None:
            header["head"] = {**self.head.meta, "layers": list(self.head.layers)}
            tensors.update(head_weight=self.head.weight, head_bias=self.head.bias)
        return fileformat.write(path, fileformat.KIND_VECTORS, header, tensors)

    @classmethod
    def load(cls, path: str | os.PathLike[str], expect_model: Any = None) -> EmotionVectors:
        """Read a vector file; with ``expect_model`` (a model or its fingerprint dict), refuse
        vectors built for another model.

        The header is checked field by field, and NaN, infinite or zero directions are
        refused, each with one VectorFileError line naming the file.
        """
        header, t = fileformat.read(path, fileformat.KIND_VECTORS, VECTOR_SCHEMA)
        emotions = tuple(header.pop("emotions"))
        layers = tuple(header.pop("layers"))
        header.pop("kind", None)
        head_meta = header.pop("head", None)
        try:
            head = None
            if isinstance(head_meta, dict):
                head = ReadoutHead(tuple(head_meta.pop("layers", ())),
                                   fileformat.need(t, "head_weight", path),
                                   fileformat.need(t, "head_bias", path), head_meta)
            vecs = cls(emotions, layers, fileformat.need(t, "directions", path),
                       fileformat.need(t, "raw", path), fileformat.need(t, "norm_mean", path),
                       fileformat.need(t, "norm_median", path), header, t.get("center"), head)
        except EmolensError as exc:
            raise VectorFileError(f"{path}: {exc}") from None
        _check_directions(vecs, path)
        if expect_model is not None:
            vecs.check_model(expect_model)
        return vecs


def _check_directions(vecs: EmotionVectors, path: Any) -> None:
    if not np.isfinite(vecs.directions).all():
        e, li = np.argwhere(~np.isfinite(vecs.directions).all(axis=2))[0]
        raise VectorFileError(f"{path}: the direction of {vecs.emotions[e]!r} at layer "
                              f"{vecs.layers[li]} holds NaN or inf")
    lengths = np.linalg.norm(vecs.directions, axis=2)
    if (lengths == 0).any():
        e, li = np.argwhere(lengths == 0)[0]
        raise VectorFileError(f"{path}: the direction of {vecs.emotions[e]!r} at layer "
                              f"{vecs.layers[li]} is all zeros")
