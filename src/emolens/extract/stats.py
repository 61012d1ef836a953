"""Sufficient statistics of an extraction: exact to merge across shards and ranks.

:class:`StoryStats` holds, per emotion, the sum and count of each text's pooled activation;
:class:`NeutralStats` the token mean, centred scatter and a norm histogram of neutral text
(for the confound PCA and the residual-stream scale). Both have a fixed size, whatever the
number of texts, and merge exactly (sums add; centred moments merge by Chan's formula), so a
corpus split into shards (job arrays) or ranks (torch.distributed) gives the vectors of one
pass.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emolens import fileformat
from emolens.errors import CorpusError, EmolensError, VectorFileError
from emolens.fileformat import Field, check_layers, format_layers

__all__ = ["NORM_BINS", "NeutralStats", "StoryStats", "histogram_quantile", "norm_bin_index",
           "norm_bins_header"]

STORY_SCHEMA = {"labels": Field("list[str]"), "layers": Field("layers")}
NORM_BINS_SCHEMA = {"log2_min": Field("number"), "per_octave": Field("int"),
                    "count": Field("int")}
NEUTRAL_SCHEMA = {"layers": Field("layers"), "n_tokens": Field("int"),
                  "norm_bins": Field("object", required=False, fields=NORM_BINS_SCHEMA)}


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


#: Token norms are counted in log2-spaced bins: ``NORM_BINS_PER_OCTAVE`` bins per doubling from
#: ``2**NORM_LOG2_MIN`` up (relative bin width 0.27%), so the median of any number of tokens
#: is read from a fixed-size histogram that merges exactly.
NORM_LOG2_MIN = -16
NORM_BINS_PER_OCTAVE = 256
NORM_BINS = 40 * NORM_BINS_PER_OCTAVE  # up to 2**24


def norm_bins_header() -> dict[str, Any]:
    """How the norm histogram is binned, as recorded in file headers."""
    return {"log2_min": NORM_LOG2_MIN, "per_octave": NORM_BINS_PER_OCTAVE, "count": NORM_BINS}


def norm_bin_index(norms: np.ndarray) -> np.ndarray:
    """Histogram bin of each token norm (0 and tiny norms in bin 0, huge ones in the last).

    >>> norm_bin_index(np.array([0.0, 1.0, 2.0, 1e30])).tolist()
    [0, 4096, 4352, 10239]
    """
    with np.errstate(divide="ignore"):
        pos = np.floor((np.log2(np.asarray(norms, np.float64)) - NORM_LOG2_MIN)
                       * NORM_BINS_PER_OCTAVE)
    return np.clip(np.nan_to_num(pos, neginf=0.0), 0, NORM_BINS - 1).astype(np.int64)


def histogram_quantile(hist: np.ndarray, q: float) -> float:
    """The ``q`` quantile of the values counted in a norm histogram (log-linear within a bin).

    >>> h = np.zeros(NORM_BINS, np.int64); h[norm_bin_index(np.array([1.0, 2.0, 8.0]))] += 1
    >>> round(histogram_quantile(h, 0.5), 2)
    2.0
    """
    total = int(hist.sum())
    if total == 0:
        return float("nan")
    target = q * total
    cum = np.cumsum(hist)
    b = int(np.searchsorted(cum, target, side="left"))
    b = min(b, NORM_BINS - 1)
    before = cum[b - 1] if b > 0 else 0
    frac = min(max((target - before) / max(int(hist[b]), 1), 0.0), 1.0)
    return float(2.0 ** (NORM_LOG2_MIN + (b + frac) / NORM_BINS_PER_OCTAVE))


@dataclass(eq=False)
class NeutralStats:
    """Token-level moments and norm histogram of neutral text; fixed size, exact to merge.

    Per layer ``layers[l]``: the token mean ``mean[l]`` (float64), the centred scatter
    ``m2[l] = sum (x - mean)(x - mean)^T`` (float32 from a model pass, float64 when built
    from numpy; updated per batch around the batch's own mean and merged with Chan's
    formula, so it never subtracts two large sums), the sum of token L2 norms and a
    histogram of them (:data:`NORM_BINS` log-spaced bins, for the median). Nothing grows
    with the number of tokens.

    >>> ns = NeutralStats.empty([0], d=2)
    >>> ns.add_tokens(np.array([[[3.0, 4.0], [0.0, 1.0], [0.0, 2.0]]]))
    >>> ns.n_tokens, [round(float(x), 2) for x in ns.norm_stats()[1]]
    (3, [2.0])
    """

    layers: tuple[int, ...]
    n_tokens: int
    mean: np.ndarray
    m2: np.ndarray
    norm_hist: np.ndarray
    norm_sum: np.ndarray

    def __post_init__(self) -> None:
        self.layers = check_layers(self.layers)
        self.n_tokens = int(self.n_tokens)
        self.mean = np.asarray(self.mean, dtype=np.float64)
        m2 = np.asarray(self.m2)
        self.m2 = m2 if m2.dtype in (np.float32, np.float64) else m2.astype(np.float64)
        self.norm_hist = np.asarray(self.norm_hist, dtype=np.int64)
        self.norm_sum = np.asarray(self.norm_sum, dtype=np.float64)
        n_layers = len(self.layers)
        if self.mean.ndim != 2 or self.mean.shape[0] != n_layers:
            raise VectorFileError(f"mean has shape {self.mean.shape}, expected ({n_layers}, d)")
        d = self.mean.shape[1]
        if self.m2.shape != (n_layers, d, d):
            raise VectorFileError(f"m2 has shape {self.m2.shape}, expected "
                                  f"({n_layers}, {d}, {d})")
        if self.norm_hist.shape != (n_layers, NORM_BINS):
            raise VectorFileError(f"norm_hist has shape {self.norm_hist.shape}, expected "
                                  f"({n_layers}, {NORM_BINS})")
        if self.norm_sum.shape != (n_layers,):
            raise VectorFileError(f"norm_sum has shape {self.norm_sum.shape}, expected "
                                  f"({n_layers},)")
        if self.n_tokens < 0 or (self.norm_hist < 0).any():
            raise VectorFileError("token counts must not be negative")
        if n_layers and (self.norm_hist.sum(axis=1) != self.n_tokens).any():
            raise VectorFileError(f"norm_hist counts {self.norm_hist.sum(axis=1).tolist()} "
                                  f"tokens, not {self.n_tokens}")

    def __repr__(self) -> str:
        return (f"NeutralStats(layers {format_layers(self.layers)}, d={self.d}, "
                f"{self.n_tokens} tokens)")

    @property
    def d(self) -> int:
        """Hidden size."""
        return int(self.mean.shape[1])

    @property
    def sum(self) -> np.ndarray:
        """Sum of token activations ``[L, d]`` (float64)."""
        return self.mean * self.n_tokens

    @property
    def sum_outer(self) -> np.ndarray:
        """Sum of token outer products ``[L, d, d]`` (float64), rebuilt from the centred form."""
        return self.m2.astype(np.float64) + self.n_tokens * np.einsum(
            "li,lj->lij", self.mean, self.mean)

    @classmethod
    def empty(cls, layers: Sequence[int], d: int, dtype: Any = np.float64) -> NeutralStats:
        """Zero statistics at ``layers`` with hidden size ``d`` (``m2`` stored as ``dtype``)."""
        n_layers = len(layers)
        return cls(tuple(layers), 0, np.zeros((n_layers, d)), np.zeros((n_layers, d, d), dtype),
                   np.zeros((n_layers, NORM_BINS), np.int64), np.zeros(n_layers))

    def nbytes(self) -> int:
        """Bytes held by the arrays (independent of the number of tokens)."""
        return int(sum(a.nbytes for a in (self.mean, self.m2, self.norm_hist, self.norm_sum)))

    def add_tokens(self, acts: np.ndarray) -> None:
        """Add token activations ``[n_layers, n_tokens, d]`` (one text or many, unpadded)."""
        acts = np.asarray(acts)
        if acts.ndim != 3 or acts.shape[0] != len(self.layers) or acts.shape[2] != self.d:
            raise VectorFileError(f"token activations have shape {acts.shape}; expected "
                                  f"[{len(self.layers)}, n_tokens, {self.d}]")
        n_b = acts.shape[1]
        if n_b == 0:
            return
        acts = acts.astype(np.float64, copy=False)
        if not np.isfinite(acts).all():
            raise CorpusError("neutral token activations contain NaN or inf")
        n_a, n = self.n_tokens, self.n_tokens + n_b
        for li in range(acts.shape[0]):  # per layer keeps the temporary at [n, d]
            mu_b = acts[li].mean(axis=0)
            xc = (acts[li] - mu_b).astype(self.m2.dtype, copy=False)
            delta = mu_b - self.mean[li]
            self.m2[li] += xc.T @ xc + (np.outer(delta, delta) * (n_a * n_b / n)).astype(
                self.m2.dtype)
            self.mean[li] += delta * (n_b / n)
            norms = np.linalg.norm(acts[li], axis=1)
            self.norm_sum[li] += norms.sum()
            np.add.at(self.norm_hist[li], norm_bin_index(norms), 1)
        self.n_tokens = n

    def merge(self, other: NeutralStats) -> NeutralStats:
        """Exact merge of two shards (Chan's parallel formula); returns a new object.

        >>> a = NeutralStats.empty([0], d=1); a.add_tokens(np.array([[[1.0], [3.0]]]))
        >>> b = NeutralStats.empty([0], d=1); b.add_tokens(np.array([[[5.0]]]))
        >>> m = a.merge(b)
        >>> m.n_tokens, m.mean.tolist(), m.covariance(0).round(6).tolist()
        (3, [[3.0]], [[2.666667]])
        """
        if tuple(other.layers) != self.layers or other.d != self.d:
            raise VectorFileError(
                f"cannot merge neutral statistics with layers {format_layers(other.layers)}, "
                f"d={other.d} into layers {format_layers(self.layers)}, d={self.d}")
        n_a, n_b = self.n_tokens, other.n_tokens
        n = n_a + n_b
        dtype = np.promote_types(self.m2.dtype, other.m2.dtype)
        if n == 0:
            return NeutralStats(self.layers, 0, self.mean.copy(), self.m2.astype(dtype),
                                self.norm_hist.copy(), self.norm_sum.copy())
        delta = other.mean - self.mean
        mean = self.mean + delta * (n_b / n)
        m2 = (self.m2.astype(np.float64) + other.m2 + np.einsum("li,lj->lij", delta, delta)
              * (n_a * n_b / n)).astype(dtype)
        return NeutralStats(self.layers, n, mean, m2, self.norm_hist + other.norm_hist,
                            self.norm_sum + other.norm_sum)

    def norm_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-layer mean and median of per-token L2 norms, ``([L], [L])`` float32.

        The mean is exact; the median is read from the histogram (within 0.27%, and far
        closer with many tokens). NaN where no tokens were seen (a missing norm, which
        later use refuses).
        """
        if self.n_tokens == 0:
            nan = np.full(len(self.layers), np.nan, np.float32)
            return nan, nan.copy()
        mean = (self.norm_sum / self.n_tokens).astype(np.float32)
        median = np.array([histogram_quantile(h, 0.5) for h in self.norm_hist], np.float32)
        return mean, median

    def covariance(self, layer_idx: int) -> np.ndarray:
        """Centred token covariance ``m2 / n`` (float64) at position ``layer_idx``.

        >>> ns = NeutralStats.empty([0], d=1); ns.add_tokens(np.array([[[1.0], [3.0]]]))
        >>> ns.covariance(0).tolist()
        [[1.0]]
        """
        if self.n_tokens < 2:
            raise CorpusError(f"neutral statistics hold {self.n_tokens} token(s); the PCA "
                              "needs at least 2")
        cov = self.m2[layer_idx].astype(np.float64) / self.n_tokens
        return (cov + cov.T) / 2  # symmetric to rounding, for eigh

    # ---- files ------------------------------------------------------------------------------

    def header(self) -> dict[str, Any]:
        """The JSON fields that describe the arrays (layers, token count, norm bins)."""
        return {"layers": list(self.layers), "n_tokens": self.n_tokens,
                "norm_bins": norm_bins_header()}

    def tensors(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The arrays by name (``prefix`` + mean, m2, norm_hist, norm_sum)."""
        return {f"{prefix}mean": self.mean, f"{prefix}m2": self.m2,
                f"{prefix}norm_hist": self.norm_hist, f"{prefix}norm_sum": self.norm_sum}

    @classmethod
    def from_file_parts(cls, header: Mapping[str, Any], tensors: Mapping[str, np.ndarray],
                        path: Any, prefix: str = "") -> NeutralStats:
        """Rebuild from a validated header and its tensors (errors name ``path``).

        Files of the first layout (raw ``sum``/``sum_outer`` and every token's norm) are
        converted to this one.
        """
        def need(name: str) -> np.ndarray:
            return fileformat.need(tensors, prefix + name, path)

        bins = header.get("norm_bins")
        if bins is not None and dict(bins) != norm_bins_header():
            raise VectorFileError(f"{path}: norm histogram binned as {bins}, this emolens "
                                  f"bins as {norm_bins_header()}")
        n = int(header["n_tokens"])
        if prefix + "m2" not in tensors and prefix + "sum_outer" in tensors:
            return _from_tensors(lambda: cls._from_first_layout(
                tuple(header["layers"]), n, need("sum"), need("sum_outer"),
                need("token_norms")), path)
        return _from_tensors(lambda: cls(tuple(header["layers"]), n, need("mean"), need("m2"),
                                         need("norm_hist"), need("norm_sum")), path)

    @classmethod
    def _from_first_layout(cls, layers: tuple[int, ...], n: int, total: np.ndarray,
                           outer: np.ndarray, norms: np.ndarray) -> NeutralStats:
        total, outer = np.asarray(total, np.float64), np.asarray(outer, np.float64)
        mean = total / n if n else np.zeros_like(total)
        m2 = outer - n * np.einsum("li,lj->lij", mean, mean)
        norms = np.asarray(norms, np.float64).reshape(len(layers), n)
        hist = np.zeros((len(layers), NORM_BINS), np.int64)
        for li in range(len(layers)):
            np.add.at(hist[li], norm_bin_index(norms[li]), 1)
        return cls(layers, n, mean, m2, hist, norms.sum(axis=1))

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
