"""The statistics a read-out head is fitted from: per-fold class sums and text scatter.

:class:`ScatterStats` holds, at the head's layers and for each of two folds of the
training texts (a stable hash of each record id), the per-emotion sums and counts of the
text means and their scatter ``sum m m^T``.  That is enough to fit shrinkage LDA
(:mod:`emolens.head`) and to choose its shrinkage by fitting on one fold and scoring the
other.  Like the story statistics it has a fixed size and merges exactly (everything
adds), across shards and torch.distributed ranks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from emolens import fileformat
from emolens.errors import CorpusError, VectorFileError
from emolens.extract.accumulate import accumulate_dtype
from emolens.fileformat import Field, check_layers, format_layers

__all__ = ["FOLDS", "HEAD_MAX_ENTRIES", "SCATTER_SCHEMA", "ScatterAccumulator", "ScatterStats",
           "default_head_layers", "fold_of"]

#: Training texts are split in this many folds to choose the head's shrinkage.
FOLDS = 2
#: The head gets every stored layer while layers x d x d stays under this many numbers;
#: beyond it (large models), the middle layers only.
HEAD_MAX_ENTRIES = 1 << 25
SCATTER_SCHEMA = {"labels": Field("list[str]"), "layers": Field("layers"),
                  "folds": Field("int")}


def fold_of(record_id: str) -> int:
    """The fold of a training text: a stable hash of its id (the same on every rank).

    >>> fold_of("story/calm/t000/0") in (0, 1)
    True
    """
    return hashlib.sha1(record_id.encode("utf-8")).digest()[0] % FOLDS


def default_head_layers(layers: Sequence[int], d: int) -> tuple[int, ...]:
    """Every stored layer if the scatter stays small, else up to 8 middle layers.

    >>> default_head_layers(range(30), 576) == tuple(range(30))
    True
    >>> default_head_layers(range(32), 4096)
    (10, 12, 13, 15, 16, 18, 19, 21)
    """
    layers = sorted(int(x) for x in layers)
    if len(layers) * d * d <= HEAD_MAX_ENTRIES:
        return tuple(layers)
    lo, hi = layers[0] + 0.3 * (layers[-1] - layers[0]), layers[0] + 0.7 * (layers[-1] - layers[0])
    middle = [x for x in layers if lo <= x <= hi] or layers
    picks = np.linspace(0, len(middle) - 1, min(8, len(middle))).round().astype(int)
    return tuple(sorted({middle[i] for i in picks}))


@dataclass(eq=False)
class ScatterStats:
    """Per-fold class sums ``[F, E, H, d]``, counts ``[F, E]`` and scatter ``[F, H, d, d]``.

    >>> s = ScatterStats.empty(["calm", "sad"], [3], d=2)
    >>> s.sums[0, 1, 0] += [1.0, 2.0]; s.counts[0, 1] += 1
    >>> s.scatter[0, 0] += np.outer([1.0, 2.0], [1.0, 2.0])
    >>> [f[1].tolist() for f in s.folds(3)], s.total(3)[2].tolist()
    ([[0, 1], [0, 0]], [[1.0, 2.0], [2.0, 4.0]])
    """

    labels: tuple[str, ...]
    layers: tuple[int, ...]
    sums: np.ndarray
    counts: np.ndarray
    scatter: np.ndarray

    def __post_init__(self) -> None:
        self.labels = tuple(str(x) for x in self.labels)
        self.layers = check_layers(self.layers)
        self.sums = np.asarray(self.sums, dtype=np.float64)
        self.counts = np.asarray(self.counts, dtype=np.int64)
        self.scatter = np.asarray(self.scatter, dtype=np.float64)
        f, e, h = self.sums.shape[:3] if self.sums.ndim == 4 else (0, 0, 0)
        d = self.sums.shape[3] if self.sums.ndim == 4 else 0
        if (e, h) != (len(self.labels), len(self.layers)) or f < 2:
            raise VectorFileError(f"scatter sums have shape {self.sums.shape}, expected "
                                  f"(folds>=2, {len(self.labels)}, {len(self.layers)}, d)")
        if self.counts.shape != (f, e) or self.scatter.shape != (f, h, d, d):
            raise VectorFileError(f"scatter counts {self.counts.shape} or scatter "
                                  f"{self.scatter.shape} do not fit sums {self.sums.shape}")

    def __repr__(self) -> str:
        return (f"ScatterStats({len(self.labels)} labels, layers {format_layers(self.layers)}, "
                f"d={self.d}, {int(self.counts.sum())} texts in {self.n_folds} folds)")

    @property
    def d(self) -> int:
        """Hidden size."""
        return int(self.sums.shape[3])

    @property
    def n_folds(self) -> int:
        """Number of folds."""
        return int(self.sums.shape[0])

    @classmethod
    def empty(cls, labels: Sequence[str], layers: Sequence[int], d: int,
              folds: int = FOLDS) -> ScatterStats:
        """Zero statistics."""
        e, h = len(labels), len(layers)
        return cls(tuple(labels), tuple(layers), np.zeros((folds, e, h, d)),
                   np.zeros((folds, e), np.int64), np.zeros((folds, h, d, d)))

    def _layer(self, layer: int) -> int:
        if layer not in self.layers:
            raise VectorFileError(f"no head statistics at layer {layer} (have "
                                  f"{format_layers(self.layers)})")
        return self.layers.index(layer)

    def folds(self, layer: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(sums [E, d], counts [E], scatter [d, d])`` of each fold at ``layer``."""
        i = self._layer(layer)
        return [(self.sums[f, :, i], self.counts[f], self.scatter[f, i])
                for f in range(self.n_folds)]

    def total(self, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The same summed over the folds."""
        i = self._layer(layer)
        return self.sums[:, :, i].sum(0), self.counts.sum(0), self.scatter[:, i].sum(0)

    def merge(self, other: ScatterStats) -> ScatterStats:
        """Exact merge (same labels, layers and width)."""
        if (other.labels, other.layers, other.d, other.n_folds) != (
                self.labels, self.layers, self.d, self.n_folds):
            raise VectorFileError("cannot merge head statistics of other labels, layers, "
                                  "width or folds")
        return ScatterStats(self.labels, self.layers, self.sums + other.sums,
                            self.counts + other.counts, self.scatter + other.scatter)

    def header(self) -> dict[str, Any]:
        """The JSON fields that describe the arrays."""
        return {"labels": list(self.labels), "layers": list(self.layers),
                "folds": self.n_folds}

    def tensors(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The arrays by name."""
        return {f"{prefix}sums": self.sums, f"{prefix}counts": self.counts,
                f"{prefix}scatter": self.scatter}

    @classmethod
    def from_file_parts(cls, header: Mapping[str, Any], tensors: Mapping[str, np.ndarray],
                        path: Any, prefix: str = "") -> ScatterStats:
        """Rebuild from a validated header and its tensors (errors name ``path``)."""
        fileformat.validate(header, SCATTER_SCHEMA, path)
        try:
            return cls(tuple(header["labels"]), tuple(header["layers"]),
                       fileformat.need(tensors, prefix + "sums", path),
                       fileformat.need(tensors, prefix + "counts", path),
                       fileformat.need(tensors, prefix + "scatter", path))
        except VectorFileError as exc:
            raise VectorFileError(f"{path}: {exc}") from None


class ScatterAccumulator:
    """Running :class:`ScatterStats` in torch on the model's device (a fixed size).

    >>> acc = ScatterAccumulator(["calm", "sad"], [0], d=2)
    >>> acc.add(["sad", "sad"], torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]]), [0, 1])
    >>> s = acc.to_stats()
    >>> s.counts.tolist(), s.scatter[1, 0].tolist()
    ([[0, 1], [0, 1]], [[0.0, 0.0], [0.0, 4.0]])
    """

    def __init__(self, labels: Sequence[str], layers: Sequence[int], d: int,
                 device: torch.device | str = "cpu", folds: int = FOLDS) -> None:
        self.labels = tuple(labels)
        self.layers = tuple(int(x) for x in layers)
        self.device = torch.device(device)
        self._index = {x: i for i, x in enumerate(self.labels)}
        dtype = accumulate_dtype(self.device)
        e, h = len(self.labels), len(self.layers)
        self.sums = torch.zeros(folds, e, h, d, dtype=dtype, device=self.device)
        self.counts = torch.zeros(folds, e, dtype=torch.long, device=self.device)
        self.scatter = torch.zeros(folds, h, d, d, dtype=dtype, device=self.device)

    def arrays(self) -> dict[str, torch.Tensor]:
        """Every array this accumulator holds, by name."""
        return {"sums": self.sums, "counts": self.counts, "scatter": self.scatter}

    def add(self, labels: Sequence[str], means: torch.Tensor, folds: Sequence[int]) -> None:
        """Add a batch of text means ``[B, H, d]`` (at this accumulator's layers)."""
        try:
            idx = [self._index[x] for x in labels]
        except KeyError as exc:
            raise CorpusError(f"unknown label {exc.args[0]!r}") from None
        m = means.to(self.device, self.sums.dtype)
        for f in sorted(set(folds)):
            rows = [b for b, k in enumerate(folds) if k == f]
            part = m[rows]
            lab = torch.tensor([idx[b] for b in rows], dtype=torch.long, device=self.device)
            self.sums[f].index_add_(0, lab, part)
            self.counts[f].index_add_(0, lab, torch.ones_like(lab))
            self.scatter[f] += torch.einsum("bhd,bhk->hdk", part, part)

    def all_reduce(self, group: Any = None) -> None:
        """Sum every rank's statistics in place (torch.distributed)."""
        import torch.distributed as dist

        for t in self.arrays().values():
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)

    def to_stats(self) -> ScatterStats:
        """The numpy :class:`ScatterStats` of what was added."""
        return ScatterStats(self.labels, self.layers, self.sums.cpu().double().numpy(),
                            self.counts.cpu().numpy(), self.scatter.cpu().double().numpy())
