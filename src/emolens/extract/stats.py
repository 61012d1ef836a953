"""Sufficient statistics of an extraction: exact to merge across shards and ranks.

:class:`StoryStats` holds, per emotion, the sum and count of each text's pooled activation;
:class:`NeutralStats` the token-level sums, outer products and norms of neutral text (for the
confound PCA and the residual-stream scale). Sums merge exactly, so a corpus split into
shards (job arrays) or ranks (torch.distributed) gives the vectors of one pass.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emolens import fileformat
from emolens.errors import CorpusError, EmolensError, VectorFileError
from emolens.fileformat import Field, check_layers, format_layers

__all__ = ["NeutralStats", "StoryStats"]

STORY_SCHEMA = {"labels": Field("list[str]"), "layers": Field("layers")}
NEUTRAL_SCHEMA = {"layers": Field("layers"), "n_tokens": Field("int")}


def _from_tensors(build: Any, path: Any) -> Any:
    """Run a constructor on file contents; its complaints become errors naming ``path``."""
    try:
        return build()
    except EmolensError as exc:
        raise VectorFileError(f"{path}: {exc}") from None


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
        self.layers = check_layers(self.layers)
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
        if (self.counts < 0).any() or (self.token_counts < 0).any():
            raise VectorFileError("counts and token_counts must not be negative")
        self._index = {name: i for i, name in enumerate(self.labels)}

    def __repr__(self) -> str:
        return (f"StoryStats({len(self.labels)} labels, layers {format_layers(self.layers)}, "
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
        """Add a batch: ``labels[b]`` with ``pooled[b]`` of shape ``[B, n_layers, d]``.

        >>> s = StoryStats.empty(["calm", "sad"], [0], d=1)
        >>> s.add_batch(["sad", "sad"], np.array([[[1.0]], [[3.0]]]), [4, 6])
        >>> s.counts.tolist(), s.sums[1, 0].tolist(), s.token_counts.tolist()
        ([0, 2], [4.0], [0, 10])
        """
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
        """Exact merge of two shards (label union, self's order first); returns a new object.

        >>> a = StoryStats.empty(["calm"], [0], d=1); a.add("calm", np.array([[2.0]]))
        >>> b = StoryStats.empty(["sad"], [0], d=1); b.add("sad", np.array([[4.0]]))
        >>> m = a.merge(b)
        >>> m.labels, m.means()[:, 0, 0].tolist()
        (('calm', 'sad'), [2.0, 4.0])
        """
        if tuple(other.layers) != self.layers or other.d != self.d:
            raise VectorFileError(
                f"cannot merge story statistics with layers {format_layers(other.layers)}, "
                f"d={other.d} into layers {format_layers(self.layers)}, d={self.d}")
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
        empty = [x for x, c in zip(self.labels, self.counts, strict=True) if c == 0]
        if empty:
            more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
            raise CorpusError(f"no texts for label(s) {', '.join(empty[:5])}{more}")
        return self.sums / self.counts[:, None, None]

    # ---- files ------------------------------------------------------------------------------

    def header(self) -> dict[str, Any]:
        """The JSON fields that describe the arrays (labels and layers)."""
        return {"labels": list(self.labels), "layers": list(self.layers)}

    def tensors(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The arrays by name (``prefix`` + sums, counts, token_counts)."""
        return {f"{prefix}sums": self.sums, f"{prefix}counts": self.counts,
                f"{prefix}token_counts": self.token_counts}

    @classmethod
    def from_file_parts(cls, header: Mapping[str, Any], tensors: Mapping[str, np.ndarray],
                        path: Any, prefix: str = "") -> StoryStats:
        """Rebuild from a validated header and its tensors (errors name ``path``)."""
        def need(name: str) -> np.ndarray:
            return fileformat.need(tensors, prefix + name, path)

        return _from_tensors(lambda: cls(tuple(header["labels"]), tuple(header["layers"]),
                                         need("sums"), need("counts"), need("token_counts")),
                             path)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a safetensors file (atomic)."""
        return fileformat.write(path, fileformat.KIND_STORY, self.header(), self.tensors())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StoryStats:
        """Read a file written by :meth:`save`.

        >>> import tempfile, pathlib
        >>> s = StoryStats.empty(["calm", "sad"], [1, 2], d=4)
        >>> p = s.save(pathlib.Path(tempfile.mkdtemp()) / "s.safetensors")
        >>> StoryStats.load(p)
        StoryStats(2 labels, layers 1, 2, d=4, 0 texts)
        """
        header, tensors = fileformat.read(path, fileformat.KIND_STORY, STORY_SCHEMA)
        return cls.from_file_parts(header, tensors, path)


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
        self.layers = check_layers(self.layers)
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
        return (f"NeutralStats(layers {format_layers(self.layers)}, d={self.d}, "
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
        """Exact merge of two shards; returns a new object.

        >>> a = NeutralStats.empty([0], d=1); a.add_tokens(np.array([[[1.0], [3.0]]]))
        >>> b = NeutralStats.empty([0], d=1); b.add_tokens(np.array([[[5.0]]]))
        >>> m = a.merge(b)
        >>> m.n_tokens, m.norm_stats()[1].tolist()
        (3, [3.0])
        """
        if tuple(other.layers) != self.layers or other.d != self.d:
            raise VectorFileError(
                f"cannot merge neutral statistics with layers {format_layers(other.layers)}, "
                f"d={other.d} into layers {format_layers(self.layers)}, d={self.d}")
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
        """Centred token covariance ``sum_outer/n - mean mean^T`` at position ``layer_idx``.

        >>> ns = NeutralStats.empty([0], d=1); ns.add_tokens(np.array([[[1.0], [3.0]]]))
        >>> ns.covariance(0).tolist()
        [[1.0]]
        """
        if self.n_tokens < 2:
            raise CorpusError(f"neutral statistics hold {self.n_tokens} token(s); the PCA "
                              "needs at least 2")
        mean = self.sum[layer_idx] / self.n_tokens
        cov = self.sum_outer[layer_idx] / self.n_tokens - np.outer(mean, mean)
        return (cov + cov.T) / 2  # symmetric to rounding, for eigh

    # ---- files ------------------------------------------------------------------------------

    def header(self) -> dict[str, Any]:
        """The JSON fields that describe the arrays (layers and token count)."""
        return {"layers": list(self.layers), "n_tokens": self.n_tokens}

    def tensors(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The arrays by name (``prefix`` + sum, sum_outer, token_norms)."""
        return {f"{prefix}sum": self.sum, f"{prefix}sum_outer": self.sum_outer,
                f"{prefix}token_norms": self.token_norms}

    @classmethod
    def from_file_parts(cls, header: Mapping[str, Any], tensors: Mapping[str, np.ndarray],
                        path: Any, prefix: str = "") -> NeutralStats:
        """Rebuild from a validated header and its tensors (errors name ``path``)."""
        def need(name: str) -> np.ndarray:
            return fileformat.need(tensors, prefix + name, path)

        return _from_tensors(lambda: cls(tuple(header["layers"]), header["n_tokens"],
                                         need("sum"), need("sum_outer"), need("token_norms")),
                             path)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a safetensors file (atomic)."""
        return fileformat.write(path, fileformat.KIND_NEUTRAL, self.header(), self.tensors())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NeutralStats:
        """Read a file written by :meth:`save`.

        >>> import tempfile, pathlib
        >>> ns = NeutralStats.empty([3], d=2); ns.add_tokens(np.ones((1, 4, 2)))
        >>> NeutralStats.load(ns.save(pathlib.Path(tempfile.mkdtemp()) / "n.safetensors"))
        NeutralStats(layers 3, d=2, 4 tokens)
        """
        header, tensors = fileformat.read(path, fileformat.KIND_NEUTRAL, NEUTRAL_SCHEMA)
        return cls.from_file_parts(header, tensors, path)
