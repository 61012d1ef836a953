"""The held-out layer sweep: which layer's vectors classify held-out stories best.

Scored through the one read path (:class:`emolens.readout.Reader`), from hit counts kept
while the stories stream past (no ``[N, L, d]`` array), or from pooled features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emolens.errors import CorpusError, VectorFileError
from emolens.extract.run import DEFAULT_TOKEN_SKIP, _story_batches
from emolens.extract.shards import PassStats
from emolens.readout import Reader
from emolens.stats import rank_of_true
from emolens.vectors import EmotionVectors

if TYPE_CHECKING:  # pragma: no cover
    from emolens.corpus import Record
    from emolens.model import ModelAdapter as LanguageModel

__all__ = ["SweepCounts", "classify", "layer_sweep", "sweep_counts"]


def classify(pooled: np.ndarray, vectors_matrix: np.ndarray,
             center: np.ndarray | None = None) -> np.ndarray:
    """Cosine of ``pooled - center`` with each vector: ``[n, d] x [E, d] -> [n, E]``.

    The layer sweep's read-out (to be replaced by :mod:`emolens.readout`). A zero row (or
    zero vector) scores 0 rather than NaN.

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


@dataclass
class SweepCounts:
    """Held-out hits per layer (top-1 and top-k), fixed size, exact to sum across ranks."""

    layers: tuple[int, ...]
    top1: np.ndarray
    topk: np.ndarray
    n: int = 0

    @classmethod
    def empty(cls, layers: Sequence[int]) -> SweepCounts:
        """No texts scored yet."""
        return cls(tuple(layers), np.zeros(len(layers), np.int64),
                   np.zeros(len(layers), np.int64))

    def add(self, reader: Reader, means: torch.Tensor, truth: np.ndarray, k: int) -> None:
        """Score pooled means ``[B, L, d]`` with ``reader``; count where the truth ranks."""
        for li, layer in enumerate(self.layers):
            scores = reader.scores(layer, means[:, li].float()).cpu().numpy()
            ranks = rank_of_true(scores, truth)
            self.top1[li] += int((ranks <= 1).sum())
            self.topk[li] += int((ranks <= k).sum())
        self.n += len(truth)


def _sweep_result(vectors: EmotionVectors, counts: SweepCounts,
                  valence: dict[str, float] | None) -> dict[str, Any]:
    per_layer: dict[str, dict[str, float]] = {}
    for li, layer in enumerate(counts.layers):
        n = max(counts.n, 1)
        entry = {"top1": float(counts.top1[li] / n) if counts.n else float("nan"),
                 "top5": float(counts.topk[li] / n) if counts.n else float("nan")}
        sep = _valence_separation(vectors.matrix(layer), vectors.emotions, valence or {})
        if sep is not None:
            entry["valence_r"] = sep
        per_layer[str(layer)] = entry
    best = max(counts.layers, key=lambda x: (per_layer[str(x)]["top1"],
                                             per_layer[str(x)].get("valence_r", 0.0)))
    return {"recommended_layer": int(best), "per_layer": per_layer, "n_heldout": counts.n}


def _truth(vectors: EmotionVectors, labels: Sequence[str]) -> np.ndarray:
    index = {e: i for i, e in enumerate(vectors.emotions)}
    unknown = sorted({x for x in labels if x not in index})
    if unknown:
        raise CorpusError(f"held-out labels without a vector: {', '.join(unknown[:5])}")
    return np.array([index[x] for x in labels], dtype=np.int64)


def layer_sweep(vectors: EmotionVectors, features: np.ndarray, labels: Sequence[str],
                valence: dict[str, float] | None = None, mode: str = "auto") -> dict[str, Any]:
    """Score each layer: held-out top-1/top-5 accuracy and valence separation.

    ``features`` are pooled held-out activations [N, L, d] at ``vectors.layers``, scored
    by the one read path (:class:`emolens.readout.Reader`; ``auto`` centres them on the
    file's training mean before the cosine). An extraction scores its held-out texts
    batch by batch instead (:func:`sweep_counts`), keeping only the hit counts.
    Valence separation is the correlation, across emotions with a human valence rating,
    between each vector's rating and its projection on the (positive - negative) mean
    direction, a model-free check that the layer orders emotions by valence.

    >>> feats = vecs.directions[[0, 2]]  # texts that read exactly as calm and happy
    >>> result = layer_sweep(vecs, feats, ["calm", "happy"])
    >>> result["per_layer"]["0"]["top1"], result["n_heldout"]
    (1.0, 2)
    """
    truth = _truth(vectors, labels)
    counts = SweepCounts.empty(vectors.layers)
    counts.add(Reader(vectors, vectors.layers, mode),
               torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)), truth,
               min(5, len(vectors.emotions)))
    return _sweep_result(vectors, counts, valence)


def sweep_counts(lm: LanguageModel, vectors: EmotionVectors, records: Sequence[Record], *,
                 token_skip: int = DEFAULT_TOKEN_SKIP, batch_size: int = 16,
                 mode: str = "auto", progress: bool = False) -> SweepCounts:
    """Held-out hit counts per layer, scored batch by batch (nothing per text is kept).

    >>> from emolens.corpus import Record
    >>> recs = [Record(id=f"s{k}", kind="story", emotion=e, text=f"{e} again. " * 3)
    ...         for k, e in enumerate(("calm", "sad"))]
    >>> c = sweep_counts(lm, vecs, recs, token_skip=1)
    >>> c.n, c.top1.shape
    (2, (4,))
    """
    truth = _truth(vectors, [r.emotion for r in records])
    counts = SweepCounts.empty(vectors.layers)
    reader = Reader(vectors, vectors.layers, mode, device=lm.device)
    k = min(5, len(vectors.emotions))
    for batch_idx, means, _n in _story_batches(
            lm, records, list(vectors.layers), token_skip=token_skip,
            batch_size=batch_size, sort_by_length=True, early_exit=True, chat=False,
            max_length=512, progress=progress, desc="held-out", stats=PassStats()):
        counts.add(reader, means, truth[batch_idx], k)
    return counts


def _valence_separation(matrix: np.ndarray, emotions: Sequence[str],
                        valence: dict[str, float]) -> float | None:
    rated = [(i, valence[e]) for i, e in enumerate(emotions) if e in valence]
    if len(rated) < 4 or not any(v > 0 for _, v in rated) or not any(v < 0 for _, v in rated):
        return None  # too few rated emotions to say anything
    idx, val = np.array([i for i, _ in rated]), np.array([v for _, v in rated])
    axis = matrix[idx[val > 0]].mean(0) - matrix[idx[val < 0]].mean(0)
    proj = matrix[idx] @ axis
    return float(np.corrcoef(proj, val)[0, 1])
