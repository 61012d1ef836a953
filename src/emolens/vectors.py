"""Emotion vectors: the maths and the file format (pure numpy, no model code).

Pipeline (paper-spec section 4):

1. per text, the residual stream at each layer is mean-pooled over tokens from token N on
   (done on the model by the extraction code);
2. :class:`StoryStats` accumulates, per emotion, the sum and count of those pooled vectors.
   The statistics are exact to merge, so extraction can be sharded;
3. :class:`NeutralStats` accumulates token-level sums, outer products and per-token norms of
   neutral text (for the confound PCA and the residual-stream scale);
4. :func:`build_vectors`: emotion mean minus the mean over emotions, the top neutral PCs that
   explain ``variance`` of the neutral variance projected out, then unit norm.

Layer convention: ``layer i`` is the output of decoder block ``i`` (0-based), i.e. Hugging Face
``hidden_states[i + 1]`` and TransformerLens ``blocks.i.hook_resid_post``.

Files are safetensors with a JSON header under the metadata key ``"emolens"``; no pickle.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from emolens.errors import (
    CorpusError,
    EmolensError,
    LayerError,
    SteeringError,
    VectorFileError,
)
from emolens.fileio import atomic_path

__all__ = [
    "FORMAT_VERSION",
    "LAYER_CONVENTION",
    "MODEL_KEYS",
    "Direction",
    "EmotionVectors",
    "NeutralStats",
    "StoryStats",
    "build_vectors",
    "check_model",
    "classify",
    "neutral_pcs",
    "topk_accuracy",
]

FORMAT_VERSION = 1
META_KEY = "emolens"
LAYER_CONVENTION = (
    "layer i = output of decoder block i (0-based) = Hugging Face hidden_states[i+1] = "
    "TransformerLens blocks.i.hook_resid_post"
)
# Keys of meta["model"] that identify a model; all but "name" are compared on load.
MODEL_KEYS = ("name", "architecture", "n_layers", "hidden_size", "vocab_size", "config_hash")
_COMPARED_KEYS = ("architecture", "n_layers", "hidden_size", "vocab_size", "config_hash")
_KIND_VECTORS = "emotion_vectors"
_KIND_STORY = "story_stats"
_KIND_NEUTRAL = "neutral_stats"
# Relative slack when comparing cumulative explained variance with the threshold, so that an
# exact spectrum (e.g. 0.5 exactly) is not pushed one component further by rounding.
_VARIANCE_EPS = 1e-9


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _emolens_version() -> str:
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


def _to_json(obj: Any) -> str:
    try:
        return json.dumps(obj, default=_json_default, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise VectorFileError(
            f"metadata is not JSON-serialisable (no NaN/inf allowed): {exc}") from None


def _canonical(obj: Any) -> Any:
    """Round-trip through JSON so in-memory metadata equals what a reload gives."""
    return json.loads(_to_json(obj))


def _atomic_save_safetensors(path: str | os.PathLike[str], tensors: dict[str, np.ndarray],
                             header: dict[str, Any]) -> Path:
    from safetensors.numpy import save_file

    metadata = {META_KEY: _to_json(header)}  # validated before anything is written
    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp),
                  metadata=metadata)
    return Path(path)


def _read_safetensors(path: str | os.PathLike[str], what: str
                      ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read (header JSON, tensors) or raise one clear VectorFileError line."""
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
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
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
    if not isinstance(header, dict):
        raise VectorFileError(f"{path}: the '{META_KEY}' metadata is not a JSON object")
    return header, tensors


def _check_kind(header: dict[str, Any], kind: str, path: str | os.PathLike[str]) -> None:
    got = header.get("kind")
    if got != kind:
        raise VectorFileError(f"{path} holds {got or 'an unknown kind of data'!s}, not {kind}")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise VectorFileError(
            f"{path} has format_version {version!r}; this emolens reads format_version "
            f"{FORMAT_VERSION} (rebuild the file or upgrade emolens)")


def _need(tensors: dict[str, np.ndarray], name: str, path: str | os.PathLike[str]) -> np.ndarray:
    if name not in tensors:
        raise VectorFileError(f"{path} lacks the tensor '{name}'")
    return tensors[name]


def _layers_tuple(layers: Iterable[int]) -> tuple[int, ...]:
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0:
            raise LayerError(f"layers must be non-negative integers, got {layer!r}")
        out.append(int(layer))
    if len(set(out)) != len(out):
        raise LayerError(f"duplicate layers in {out}")
    return tuple(out)


def _fmt_layers(layers: Sequence[int]) -> str:
    if not layers:
        return "none"
    s = sorted(layers)
    if s == list(range(s[0], s[-1] + 1)) and len(s) > 2:
        return f"{s[0]}-{s[-1]}"
    return ", ".join(str(x) for x in s)


def _as_layer(layer: Any) -> int:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise LayerError(f"a layer must be an integer block index, got {layer!r}")
    return int(layer)


# --------------------------------------------------------------------------------------------
# sufficient statistics
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class StoryStats:
    """Per-label sums of pooled activations; exact to merge across shards.

    ``sums[e, l]`` is the sum over label ``e``'s texts of each text's token-mean at
    ``layers[l]``; ``counts`` counts texts and ``token_counts`` the pooled tokens.

    >>> s = StoryStats.empty(["happy", "sad"], [3, 5], d=2)
    >>> s.add("happy", np.array([[1.0, 0.0], [2.0, 0.0]]), n_tokens=10)
    >>> s.add("happy", np.array([[3.0, 0.0], [4.0, 0.0]]), n_tokens=12)
    >>> s.add("sad", np.zeros((2, 2)))
    >>> s.means()[0, :, 0].tolist(), s.counts.tolist(), s.token_counts.tolist()
    ([2.0, 3.0], [2, 1], [22, 0])
    """

    labels: tuple[str, ...]
    layers: tuple[int, ...]
    sums: np.ndarray
    counts: np.ndarray
    token_counts: np.ndarray

    def __post_init__(self) -> None:
        self.labels = tuple(str(x) for x in self.labels)
        self.layers = _layers_tuple(self.layers)
        if len(set(self.labels)) != len(self.labels):
            raise CorpusError(f"duplicate labels in {self.labels}")
        self.sums = np.asarray(self.sums, dtype=np.float64)
        self.counts = np.asarray(self.counts, dtype=np.int64)
        self.token_counts = np.asarray(self.token_counts, dtype=np.int64)
        n, n_layers = len(self.labels), len(self.layers)
        if self.sums.ndim != 3 or self.sums.shape[:2] != (n, n_layers):
            raise VectorFileError(f"sums has shape {self.sums.shape}, expected "
                                  f"({n}, {n_layers}, d)")
        if self.counts.shape != (n,) or self.token_counts.shape != (n,):
            raise VectorFileError("counts and token_counts must have one entry per label")
        self._index = {name: i for i, name in enumerate(self.labels)}

    def __repr__(self) -> str:
        return (f"StoryStats({len(self.labels)} labels, layers {_fmt_layers(self.layers)}, "
                f"d={self.d}, {int(self.counts.sum())} texts)")

    @property
    def d(self) -> int:
        """Hidden size."""
        return int(self.sums.shape[2])

    @classmethod
    def empty(cls, labels: Sequence[str], layers: Sequence[int], d: int) -> StoryStats:
        """Zero statistics for ``labels`` at ``layers`` with hidden size ``d``."""
        n, n_layers = len(labels), len(layers)
        return cls(tuple(labels), tuple(layers), np.zeros((n, n_layers, int(d))),
                   np.zeros(n, np.int64), np.zeros(n, np.int64))

    def _label_index(self, label: str) -> int:
        try:
            return self._index[label]
        except KeyError:
            close = difflib.get_close_matches(str(label), self.labels, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise CorpusError(f"unknown label {label!r}{hint}") from None

    def _check_pooled(self, pooled: np.ndarray, batch: bool) -> np.ndarray:
        pooled = np.asarray(pooled, dtype=np.float64)
        want = (len(self.layers), self.d)
        got = pooled.shape[1:] if batch else pooled.shape
        if pooled.ndim != (3 if batch else 2) or got != want:
            lead = "[B, n_layers, d]" if batch else "[n_layers, d]"
            raise VectorFileError(f"pooled activations have shape {pooled.shape}; expected "
                                  f"{lead} with n_layers={want[0]}, d={want[1]}")
        if not np.isfinite(pooled).all():
            raise CorpusError("pooled activations contain NaN or inf")
        return pooled

    def add(self, label: str, pooled: np.ndarray, n_tokens: int = 0) -> None:
        """Add one text's pooled activations ``[n_layers, d]`` (``n_tokens`` pooled)."""
        i = self._label_index(label)
        self.sums[i] += self._check_pooled(pooled, batch=False)
        self.counts[i] += 1
        self.token_counts[i] += int(n_tokens)

    def add_batch(self, labels: Sequence[str], pooled: np.ndarray,
                  n_tokens: Sequence[int] | np.ndarray | None = None) -> None:
        """Add a batch: ``labels[b]`` with ``pooled[b]`` of shape ``[B, n_layers, d]``."""
        pooled = self._check_pooled(pooled, batch=True)
        if len(labels) != pooled.shape[0]:
            raise CorpusError(f"{len(labels)} labels for {pooled.shape[0]} pooled rows")
        idx = np.array([self._label_index(x) for x in labels], dtype=np.int64)
        toks = np.zeros(len(idx), np.int64) if n_tokens is None else np.asarray(n_tokens,
                                                                                 np.int64)
        if toks.shape != idx.shape:
            raise CorpusError(f"{toks.shape[0]} token counts for {len(idx)} texts")
        # np.add.at accumulates repeated labels correctly (plain fancy += would not).
        np.add.at(self.sums, idx, pooled)
        np.add.at(self.counts, idx, 1)
        np.add.at(self.token_counts, idx, toks)

    def merge(self, other: StoryStats) -> StoryStats:
        """Exact merge of two shards (label union, self's order first); returns a new object."""
        if tuple(other.layers) != self.layers or other.d != self.d:
            raise VectorFileError(
                f"cannot merge story statistics with layers {_fmt_layers(other.layers)}, "
                f"d={other.d} into layers {_fmt_layers(self.layers)}, d={self.d}")
        labels = self.labels + tuple(x for x in other.labels if x not in self._index)
        out = StoryStats.empty(labels, self.layers, self.d)
        for src in (self, other):
            idx = np.array([out._index[x] for x in src.labels], dtype=np.int64)
            if len(idx):
                out.sums[idx] += src.sums
                out.counts[idx] += src.counts
                out.token_counts[idx] += src.token_counts
        return out

    def means(self) -> np.ndarray:
        """Per-label mean of the pooled vectors, ``[n_labels, n_layers, d]`` float64."""
        empty = [x for x, c in zip(self.labels, self.counts, strict=False) if c == 0]
        if empty:
            more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
            raise CorpusError(f"no texts for label(s) {', '.join(empty[:5])}{more}")
        return self.sums / self.counts[:, None, None]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a safetensors file (atomic)."""
        header = {"kind": _KIND_STORY, "format_version": FORMAT_VERSION,
                  "labels": list(self.labels), "layers": list(self.layers)}
        return _atomic_save_safetensors(
            path, {"sums": self.sums, "counts": self.counts,
                   "token_counts": self.token_counts}, header)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StoryStats:
        """Read a file written by :meth:`save`."""
        header, t = _read_safetensors(path, "story statistics")
        _check_kind(header, _KIND_STORY, path)
        try:
            return cls(tuple(header["labels"]), tuple(header["layers"]), _need(t, "sums", path),
                       _need(t, "counts", path), _need(t, "token_counts", path))
        except KeyError as exc:
            raise VectorFileError(f"{path}: header lacks {exc}") from None


@dataclass(eq=False)
class NeutralStats:
    """Token-level moments and norms of neutral text, exact to merge.

    ``sum[l]`` and ``sum_outer[l]`` are the sum of token activations and of their outer
    products at ``layers[l]`` (float64); ``token_norms[l]`` keeps every token's L2 norm, so the
    median of a merged set equals the median of one pass.

    >>> ns = NeutralStats.empty([0], d=2)
    >>> ns.add_tokens(np.array([[[3.0, 4.0], [0.0, 1.0], [0.0, 2.0]]]))
    >>> ns.n_tokens, ns.norm_stats()[1].tolist()
    (3, [2.0])
    """

    layers: tuple[int, ...]
    n_tokens: int
    sum: np.ndarray
    sum_outer: np.ndarray
    token_norms: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))

    def __post_init__(self) -> None:
        self.layers = _layers_tuple(self.layers)
        self.n_tokens = int(self.n_tokens)
        self.sum = np.asarray(self.sum, dtype=np.float64)
        self.sum_outer = np.asarray(self.sum_outer, dtype=np.float64)
        self.token_norms = np.asarray(self.token_norms, dtype=np.float32)
        n_layers = len(self.layers)
        if self.sum.ndim != 2 or self.sum.shape[0] != n_layers:
            raise VectorFileError(f"sum has shape {self.sum.shape}, expected ({n_layers}, d)")
        d = self.sum.shape[1]
        if self.sum_outer.shape != (n_layers, d, d):
            raise VectorFileError(f"sum_outer has shape {self.sum_outer.shape}, expected "
                                  f"({n_layers}, {d}, {d})")
        if self.token_norms.size == 0:
            self.token_norms = self.token_norms.reshape(n_layers, 0)
        if self.token_norms.shape != (n_layers, self.n_tokens):
            raise VectorFileError(f"token_norms has shape {self.token_norms.shape}, expected "
                                  f"({n_layers}, {self.n_tokens})")

    def __repr__(self) -> str:
        return (f"NeutralStats(layers {_fmt_layers(self.layers)}, d={self.d}, "
                f"{self.n_tokens} tokens)")

    @property
    def d(self) -> int:
        """Hidden size."""
        return int(self.sum.shape[1])

    @classmethod
    def empty(cls, layers: Sequence[int], d: int) -> NeutralStats:
        """Zero statistics at ``layers`` with hidden size ``d``."""
        n_layers = len(layers)
        return cls(tuple(layers), 0, np.zeros((n_layers, d)), np.zeros((n_layers, d, d)),
                   np.zeros((n_layers, 0), np.float32))

    def add_tokens(self, acts: np.ndarray) -> None:
        """Add token activations ``[n_layers, n_tokens, d]`` (one text or many, unpadded)."""
        acts = np.asarray(acts)
        if acts.ndim != 3 or acts.shape[0] != len(self.layers) or acts.shape[2] != self.d:
            raise VectorFileError(f"token activations have shape {acts.shape}; expected "
                                  f"[{len(self.layers)}, n_tokens, {self.d}]")
        if acts.shape[1] == 0:
            return
        acts = acts.astype(np.float64, copy=False)
        if not np.isfinite(acts).all():
            raise CorpusError("neutral token activations contain NaN or inf")
        self.sum += acts.sum(axis=1)
        for li in range(acts.shape[0]):  # per layer keeps the temporary at [n, d]
            self.sum_outer[li] += acts[li].T @ acts[li]
        norms = np.linalg.norm(acts, axis=2).astype(np.float32)
        self.token_norms = np.concatenate([self.token_norms, norms], axis=1)
        self.n_tokens += acts.shape[1]

    def merge(self, other: NeutralStats) -> NeutralStats:
        """Exact merge of two shards; returns a new object."""
        if tuple(other.layers) != self.layers or other.d != self.d:
            raise VectorFileError(
                f"cannot merge neutral statistics with layers {_fmt_layers(other.layers)}, "
                f"d={other.d} into layers {_fmt_layers(self.layers)}, d={self.d}")
        return NeutralStats(self.layers, self.n_tokens + other.n_tokens, self.sum + other.sum,
                            self.sum_outer + other.sum_outer,
                            np.concatenate([self.token_norms, other.token_norms], axis=1))

    def norm_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-layer mean and median of per-token L2 norms, ``([L], [L])`` float32.

        NaN where no tokens were seen (a missing norm, which later use refuses).
        """
        if self.n_tokens == 0:
            nan = np.full(len(self.layers), np.nan, np.float32)
            return nan, nan.copy()
        norms = self.token_norms.astype(np.float64)
        return (norms.mean(axis=1).astype(np.float32),
                np.median(norms, axis=1).astype(np.float32))

    def covariance(self, layer_idx: int) -> np.ndarray:
        """Centred token covariance ``sum_outer/n - mean mean^T`` at position ``layer_idx``."""
        if self.n_tokens < 2:
            raise CorpusError(f"neutral statistics hold {self.n_tokens} token(s); the PCA "
                              "needs at least 2")
        mean = self.sum[layer_idx] / self.n_tokens
        cov = self.sum_outer[layer_idx] / self.n_tokens - np.outer(mean, mean)
        return (cov + cov.T) / 2  # symmetric to rounding, for eigh

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a safetensors file (atomic)."""
        header = {"kind": _KIND_NEUTRAL, "format_version": FORMAT_VERSION,
                  "layers": list(self.layers), "n_tokens": self.n_tokens}
        return _atomic_save_safetensors(
            path, {"sum": self.sum, "sum_outer": self.sum_outer,
                   "token_norms": self.token_norms}, header)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NeutralStats:
        """Read a file written by :meth:`save`."""
        header, t = _read_safetensors(path, "neutral statistics")
        _check_kind(header, _KIND_NEUTRAL, path)
        try:
            return cls(tuple(header["layers"]), int(header["n_tokens"]), _need(t, "sum", path),
                       _need(t, "sum_outer", path), _need(t, "token_norms", path))
        except KeyError as exc:
            raise VectorFileError(f"{path}: header lacks {exc}") from None


# --------------------------------------------------------------------------------------------
# the maths
# --------------------------------------------------------------------------------------------


def neutral_pcs(neutral: NeutralStats, layer_idx: int, variance: float = 0.5) -> np.ndarray:
    """Top principal components of neutral activations, ``[k, d]`` (orthonormal rows).

    ``layer_idx`` is a position in ``neutral.layers`` (not a model layer number). ``k`` is
    the smallest count whose cumulative explained variance reaches ``variance``; 0 gives
    ``k = 0`` (nothing to remove).

    >>> ns = NeutralStats.empty([0], d=3)
    >>> rng = np.random.default_rng(0)
    >>> ns.add_tokens(rng.normal(size=(1, 500, 3)) * np.array([10.0, 1.0, 1.0]))
    >>> pcs = neutral_pcs(ns, 0, variance=0.5)
    >>> pcs.shape, bool(abs(pcs[0, 0]) > 0.99)
    ((1, 3), True)
    """
    if not (isinstance(variance, (int, float, np.floating)) and 0.0 <= variance <= 1.0):
        raise EmolensError(f"variance must be a fraction in [0, 1], got {variance!r}")
    if not -len(neutral.layers) <= layer_idx < len(neutral.layers):
        raise LayerError(f"layer position {layer_idx} is out of range for "
                         f"{len(neutral.layers)} neutral layers")
    d = neutral.d
    if variance == 0:
        return np.zeros((0, d))
    evals, evecs = np.linalg.eigh(neutral.covariance(layer_idx))
    order = np.argsort(evals)[::-1]
    evals = np.clip(evals[order], 0.0, None)
    evecs = evecs[:, order]
    total = evals.sum()
    if total <= 0:  # constant activations: nothing varies, nothing to remove
        return np.zeros((0, d))
    cum = np.cumsum(evals) / total
    k = int(np.argmax(cum >= variance - _VARIANCE_EPS)) + 1
    return np.ascontiguousarray(evecs[:, :k].T)


def _check_model_info(model_info: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(model_info, Mapping):
        raise VectorFileError("model_info must be a dict")
    missing = [k for k in MODEL_KEYS if k not in model_info]
    if missing:
        raise VectorFileError(f"model_info lacks {', '.join(missing)}")
    info = dict(model_info)
    for key in ("n_layers", "hidden_size"):
        if isinstance(info[key], bool) or not isinstance(info[key], (int, np.integer)):
            raise VectorFileError(f"model_info[{key!r}] must be an integer, got {info[key]!r}")
        info[key] = int(info[key])
    return info


def build_vectors(stats: StoryStats, neutral: NeutralStats | None = None, *,
                  variance: float = 0.5, model_info: Mapping[str, Any], token_skip: int,
                  corpus_fingerprint: str, extra_meta: Mapping[str, Any] | None = None
                  ) -> EmotionVectors:
    """Difference-of-means emotion vectors, neutral-PC denoised and unit-normalised.

    Without ``neutral`` nothing is projected out and the residual norms are missing (NaN),
    so :meth:`EmotionVectors.residual_scale` refuses until norms are supplied.

    >>> s = StoryStats.empty(["happy", "sad"], [0], d=2)
    >>> s.add("happy", np.array([[2.0, 1.0]])); s.add("sad", np.array([[0.0, 1.0]]))
    >>> info = dict(name="toy", architecture="llama", n_layers=1, hidden_size=2,
    ...             vocab_size=10, config_hash="abc")
    >>> v = build_vectors(s, model_info=info, token_skip=0, corpus_fingerprint="x")
    >>> v.matrix(0).tolist(), v.raw[:, 0].tolist()
    ([[1.0, 0.0], [-1.0, 0.0]], [[1.0, 0.0], [-1.0, 0.0]])
    """
    info = _check_model_info(model_info)
    if info["hidden_size"] != stats.d:
        raise VectorFileError(f"model hidden_size {info['hidden_size']} does not match the "
                              f"statistics' d={stats.d}")
    bad = [x for x in stats.layers if x >= info["n_layers"]]
    if bad:
        raise LayerError(f"layers {bad} are beyond the model's {info['n_layers']} layers")
    if len(stats.labels) < 2:
        raise CorpusError("difference of means needs at least 2 emotions")
    means = stats.means()  # [E, L, d] float64, raises on empty labels
    raw = means - means.mean(axis=0, keepdims=True)

    n_layers = len(stats.layers)
    norm_mean = np.full(n_layers, np.nan, np.float32)
    norm_median = np.full(n_layers, np.nan, np.float32)
    n_components: dict[str, int] = {str(x): 0 for x in stats.layers}
    denoised = raw.copy()
    if neutral is not None:
        if neutral.d != stats.d:
            raise VectorFileError(f"neutral statistics have d={neutral.d}, story statistics "
                                  f"d={stats.d}")
        pos = {x: i for i, x in enumerate(neutral.layers)}
        missing = [x for x in stats.layers if x not in pos]
        if missing:
            raise LayerError(f"neutral statistics lack layers {_fmt_layers(missing)} "
                             f"(they have {_fmt_layers(neutral.layers)})")
        nm, nmed = neutral.norm_stats()
        for li, layer in enumerate(stats.layers):
            j = pos[layer]
            norm_mean[li], norm_median[li] = nm[j], nmed[j]
            pcs = neutral_pcs(neutral, j, variance)
            n_components[str(layer)] = int(pcs.shape[0])
            if pcs.shape[0]:
                denoised[:, li] -= (denoised[:, li] @ pcs.T) @ pcs

    lengths = np.linalg.norm(denoised, axis=2)  # [E, L]
    scale = np.abs(denoised).max(initial=0.0)
    zero = np.argwhere(lengths <= 1e-12 * max(scale, 1e-300))
    if len(zero):
        e, li = zero[0]
        raise CorpusError(f"the vector for {stats.labels[e]!r} at layer {stats.layers[li]} is "
                          f"zero after denoising ({len(zero)} zero vector(s) in all)")
    directions = denoised / lengths[:, :, None]

    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "emolens_version": _emolens_version(),
        "model": info,
        "layer_convention": LAYER_CONVENTION,
        "token_skip": int(token_skip),
        "denoise": {"variance": float(variance) if neutral is not None else 0.0,
                    "n_components": n_components,
                    "neutral_tokens": int(neutral.n_tokens) if neutral is not None else 0},
        "corpus_fingerprint": str(corpus_fingerprint),
        "n_texts": {x: int(c) for x, c in zip(stats.labels, stats.counts, strict=False)},
        "n_tokens": {x: int(c) for x, c in zip(stats.labels, stats.token_counts, strict=False)},
        "recommended_layer": None,
        "layer_scores": None,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if extra_meta:
        meta.update(dict(extra_meta))
    return EmotionVectors(stats.labels, stats.layers, directions.astype(np.float32),
                          raw.astype(np.float32), norm_mean, norm_median, meta,
                          means.mean(axis=0).astype(np.float32))


def classify(pooled: np.ndarray, vectors_matrix: np.ndarray,
             center: np.ndarray | None = None) -> np.ndarray:
    """Cosine of ``pooled - center`` with each vector: ``[n, d] x [E, d] -> [n, E]``.

    A zero row (or zero vector) scores 0 rather than NaN.

    >>> classify(np.array([[2.0, 0.0], [0.0, -1.0]]), np.array([[1.0, 0.0], [0.0, 1.0]]),
    ...          None).tolist()
    [[1.0, 0.0], [0.0, -1.0]]
    """
    x = np.atleast_2d(np.asarray(pooled, dtype=np.float64))
    m = np.atleast_2d(np.asarray(vectors_matrix, dtype=np.float64))
    if center is not None:
        x = x - np.asarray(center, dtype=np.float64)
    if x.shape[1] != m.shape[1]:
        raise VectorFileError(f"pooled width {x.shape[1]} does not match vector width "
                              f"{m.shape[1]}")
    xn = np.linalg.norm(x, axis=1, keepdims=True)
    mn = np.linalg.norm(m, axis=1, keepdims=True)
    x = np.divide(x, xn, out=np.zeros_like(x), where=xn > 0)
    m = np.divide(m, mn, out=np.zeros_like(m), where=mn > 0)
    return x @ m.T


def topk_accuracy(scores: np.ndarray, true_idx: Sequence[int] | np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose true class is among the ``k`` highest scores.

    A row counts as a hit when fewer than ``k`` scores are strictly higher than the true
    class's score (ties favour the true class).

    >>> topk_accuracy(np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5]]), [0, 1], k=1)
    0.5
    >>> topk_accuracy(np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5]]), [0, 1], k=2)
    1.0
    """
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    t = np.asarray(true_idx, dtype=np.int64).reshape(-1)
    if s.shape[0] != t.shape[0] or s.shape[0] == 0:
        raise EmolensError(f"{s.shape[0]} score rows for {t.shape[0]} labels (need >= 1)")
    if k < 1:
        raise EmolensError(f"k must be >= 1, got {k}")
    if t.min() < 0 or t.max() >= s.shape[1]:
        raise EmolensError(f"true indices must lie in [0, {s.shape[1]})")
    true_scores = s[np.arange(len(t)), t]
    higher = (s > true_scores[:, None]).sum(axis=1)
    return float(np.mean(higher < k))


# --------------------------------------------------------------------------------------------
# directions and the vector file
# --------------------------------------------------------------------------------------------


def _wrap(name: str) -> str:
    return f"({name})" if any(c in name for c in "+-*/ ") else name


def _fmt_scalar(x: float) -> str:
    return f"{x:g}"


@dataclass(eq=False)
class Direction:
    """A named vector per layer; supports ``+ - * /`` and unary minus.

    Arithmetic results are not unit length; call :meth:`normalized` for that.

    >>> a = Direction("happy", {3: np.array([1.0, 0.0], np.float32)})
    >>> b = Direction("sad", {3: np.array([0.0, 1.0], np.float32)})
    >>> d = a - b
    >>> d.name, d.at(3).tolist(), (2 * d).name, (-b).at(3).tolist()
    ('happy-sad', [1.0, -1.0], '2*(happy-sad)', [-0.0, -1.0])
    >>> round(float(np.linalg.norm(d.normalized().at(3))), 6)
    1.0
    """

    name: str
    per_layer: dict[int, np.ndarray]

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

    def __repr__(self) -> str:
        return f"Direction({self.name!r}, layers {_fmt_layers(self.layers)})"

    @property
    def layers(self) -> tuple[int, ...]:
        """Layers present, ascending."""
        return tuple(self.per_layer)

    def at(self, layer: int) -> np.ndarray:
        """The vector at ``layer``."""
        layer = _as_layer(layer)
        if layer not in self.per_layer:
            raise LayerError(f"direction {self.name!r} has no layer {layer}; it has layers "
                             f"{_fmt_layers(self.layers)}")
        return self.per_layer[layer]

    def _combine(self, other: Direction, op: str) -> Direction:
        if not isinstance(other, Direction):
            return NotImplemented
        if set(self.per_layer) != set(other.per_layer):
            raise LayerError(f"cannot combine {self.name!r} (layers {_fmt_layers(self.layers)})"
                             f" with {other.name!r} (layers {_fmt_layers(other.layers)})")
        if op == "+":
            vecs = {x: v + other.per_layer[x] for x, v in self.per_layer.items()}
            return Direction(f"{self.name}+{other.name}", vecs)
        vecs = {x: v - other.per_layer[x] for x, v in self.per_layer.items()}
        return Direction(f"{self.name}-{_wrap(other.name)}", vecs)

    def __add__(self, other: Direction) -> Direction:
        return self._combine(other, "+")

    def __sub__(self, other: Direction) -> Direction:
        return self._combine(other, "-")

    def __neg__(self) -> Direction:
        return Direction(f"-{_wrap(self.name)}", {x: -v for x, v in self.per_layer.items()})

    def __mul__(self, scalar: float) -> Direction:
        if isinstance(scalar, Direction) or not np.isscalar(scalar):
            return NotImplemented
        s = float(scalar)
        return Direction(f"{_fmt_scalar(s)}*{_wrap(self.name)}",
                         {x: (v * s).astype(v.dtype) for x, v in self.per_layer.items()})

    __rmul__ = __mul__

    def __truediv__(self, scalar: float) -> Direction:
        if isinstance(scalar, Direction) or not np.isscalar(scalar):
            return NotImplemented
        s = float(scalar)
        if s == 0:
            raise SteeringError(f"cannot divide direction {self.name!r} by zero")
        return Direction(f"{_wrap(self.name)}/{_fmt_scalar(s)}",
                         {x: (v / s).astype(v.dtype) for x, v in self.per_layer.items()})

    def normalized(self) -> Direction:
        """Unit length at every layer (same name); a zero vector is an error."""
        out = {}
        for layer, v in self.per_layer.items():
            n = float(np.linalg.norm(v.astype(np.float64)))
            if not math.isfinite(n) or n == 0:
                raise SteeringError(f"direction {self.name!r} has zero or non-finite length at "
                                    f"layer {layer}")
            out[layer] = (v / n).astype(v.dtype)
        return Direction(self.name, out)


def _model_desc(model: Mapping[str, Any] | None) -> str:
    if not model:
        return "an unknown model"
    name = model.get("name") or "an unnamed model"
    parts = [str(model.get("architecture") or "?")]
    if model.get("n_layers") is not None:
        parts.append(f"{model['n_layers']} layers")
    if model.get("hidden_size") is not None:
        parts.append(f"d={model['hidden_size']}")
    if model.get("vocab_size") is not None:
        parts.append(f"vocab={model['vocab_size']}")
    if model.get("config_hash"):
        parts.append(f"config {str(model['config_hash'])[:12]}")
    return f"{name} ({', '.join(parts)})"


def _readonly_f32(x: Any) -> np.ndarray:
    arr = np.array(x, dtype=np.float32, copy=True, order="C")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class EmotionVectors:
    """Unit emotion directions per layer, with raw vectors, residual norms and metadata.

    Arrays are read-only; :meth:`subset` and :meth:`with_meta` return new objects.

    >>> s = StoryStats.empty(["happy", "sad", "calm"], [0, 1], d=3)
    >>> for i, e in enumerate(s.labels):
    ...     s.add(e, np.tile(np.eye(3)[i], (2, 1)))
    >>> info = dict(name="toy", architecture="llama", n_layers=2, hidden_size=3,
    ...             vocab_size=10, config_hash="abc")
    >>> v = build_vectors(s, model_info=info, token_skip=0, corpus_fingerprint="x")
    >>> len(v), "happy" in v, v.default_layer, v.matrix(1).shape
    (3, True, 1, (3, 3))
    >>> round(float(v.cosine_matrix(0)[0, 1]), 3)
    -0.5
    >>> (v["happy"] - v["sad"]).name
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

    def __post_init__(self) -> None:
        emotions = tuple(str(x) for x in self.emotions)
        if self.center is not None:
            center = _readonly_f32(self.center)
            if center.shape != (len(tuple(self.layers)), np.shape(self.directions)[2]):
                raise VectorFileError(f"center has shape {center.shape}, expected [L, d]")
            object.__setattr__(self, "center", center)
        layers = _layers_tuple(self.layers)
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
        meta = _canonical(dict(self.meta))
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
                f"{_fmt_layers(self.layers)}, d={self.d}, model={model!r})")

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
        """Row of ``emotion`` in :attr:`directions` (SteeringError if unknown)."""
        try:
            return self._eindex[emotion]  # type: ignore[attr-defined]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(emotion), self.emotions, n=3, cutoff=0.6)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise SteeringError(f"unknown emotion {emotion!r} ({len(self.emotions)} in this "
                                f"file{hint})") from None

    def __getitem__(self, emotion: str) -> Direction:
        e = self.index(emotion)
        return Direction(emotion, {x: self.directions[e, li].copy()
                                   for li, x in enumerate(self.layers)})

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
                             f"{_fmt_layers(self.layers)}") from None

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

    # ---- derived objects --------------------------------------------------------------------

    def subset(self, emotions: Iterable[str]) -> EmotionVectors:
        """The given emotions, in that order (vectors are not re-centred)."""
        names = list(emotions)
        idx = [self.index(e) for e in names]
        return EmotionVectors(tuple(names), self.layers, self.directions[idx], self.raw[idx],
                              self.norm_mean, self.norm_median, copy.deepcopy(self.meta),
                              self.center)

    def with_meta(self, **kv: Any) -> EmotionVectors:
        """A copy with ``meta`` updated by ``kv`` (e.g. ``recommended_layer=20``)."""
        meta = copy.deepcopy(self.meta)
        meta.update(kv)
        return EmotionVectors(self.emotions, self.layers, self.directions, self.raw,
                              self.norm_mean, self.norm_median, meta, self.center)

    # ---- files ------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write safetensors (directions, raw, norm_mean, norm_median + JSON header), atomically."""
        header = dict(self.meta)
        header.update(kind=_KIND_VECTORS, format_version=FORMAT_VERSION,
                      emotions=list(self.emotions), layers=list(self.layers))
        return _atomic_save_safetensors(
            path, {"directions": self.directions, "raw": self.raw, "norm_mean": self.norm_mean,
                   "norm_median": self.norm_median,
                   **({"center": self.center} if self.center is not None else {})}, header)

    @classmethod
    def load(cls, path: str | os.PathLike[str],
             expect_model: Mapping[str, Any] | None = None) -> EmotionVectors:
        """Read a vector file; with ``expect_model``, refuse vectors built for another model."""
        header, t = _read_safetensors(path, "emotion-vector")
        _check_kind(header, _KIND_VECTORS, path)
        try:
            emotions = tuple(header.pop("emotions"))
            layers = tuple(header.pop("layers"))
        except KeyError as exc:
            raise VectorFileError(f"{path}: header lacks {exc}") from None
        header.pop("kind", None)
        try:
            vecs = cls(emotions, layers, _need(t, "directions", path), _need(t, "raw", path),
                       _need(t, "norm_mean", path), _need(t, "norm_median", path), header,
                       t.get("center"))
        except (LayerError, SteeringError) as exc:
            raise VectorFileError(f"{path}: {exc}") from None
        except VectorFileError as exc:
            raise VectorFileError(f"{path}: {exc}") from None
        if expect_model is not None:
            check_model(vecs.meta.get("model"), expect_model)
        return vecs


def check_model(stored: Mapping[str, Any] | None, expected: Mapping[str, Any]) -> None:
    """Raise VectorFileError naming both models if identifying fields differ.

    Fields missing or None on either side are not compared; the name never is (a local
    directory and a hub id can be the same model).
    """
    stored = stored or {}
    differ = [k for k in _COMPARED_KEYS
              if stored.get(k) is not None and expected.get(k) is not None
              and stored.get(k) != expected.get(k)]
    if differ:
        raise VectorFileError(f"vectors were built for {_model_desc(stored)}, not for "
                              f"{_model_desc(expected)} (differs in {', '.join(differ)})")
