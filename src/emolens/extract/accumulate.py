"""Running sufficient statistics in torch, on the model's device, of a fixed size.

An extraction pass feeds each batch into two accumulators and keeps nothing else:

* :class:`StoryAccumulator`: per label, the sum of each text's pooled mean ``[E, L, d]``
  (float64; float32 on devices without float64), text counts and pooled-token counts;
* :class:`NeutralAccumulator`: per layer, the token mean, the centred scatter ``[L, d, d]``
  (float32 by default, updated around each batch's own mean and merged with Chan's formula),
  the sum of token norms and a fixed log-spaced histogram of them.

Neither grows with the number of texts: :meth:`arrays` lists everything they hold. Both
convert to the numpy :class:`~emolens.extract.stats.StoryStats` and
:class:`~emolens.extract.stats.NeutralStats` that files and vector building use, and both
can :meth:`all_reduce` across torch.distributed ranks (an exact merge: sums add, centred
moments are shifted to the global mean first).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from emolens.errors import CorpusError
from emolens.extract.stats import (
    NORM_BINS,
    NORM_BINS_PER_OCTAVE,
    NORM_LOG2_MIN,
    NeutralStats,
    StoryStats,
)

__all__ = ["NeutralAccumulator", "StoryAccumulator", "accumulate_dtype", "nbytes"]


def accumulate_dtype(device: torch.device | str) -> torch.dtype:
    """float64 where the device has it (CPU, CUDA), else float32 (Apple MPS).

    >>> accumulate_dtype("cpu")
    torch.float64
    """
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


class StoryAccumulator:
    """Per-label sums of pooled text means, held on ``device``; a fixed ``[E, L, d]``.

    >>> acc = StoryAccumulator(["calm", "sad"], [0, 2], d=3)
    >>> acc.add(["sad", "sad"], torch.ones(2, 2, 3), torch.tensor([2, 4]))
    >>> s = acc.to_stats()
    >>> s.counts.tolist(), s.token_counts.tolist(), (s.sums[1, 0] / s.counts[1]).tolist()
    ([0, 2], [0, 6], [1.0, 1.0, 1.0])
    """

    def __init__(self, labels: Sequence[str], layers: Sequence[int], d: int,
                 device: torch.device | str = "cpu") -> None:
        self.labels = tuple(labels)
        self.layers = tuple(int(x) for x in layers)
        self.device = torch.device(device)
        self._index = {x: i for i, x in enumerate(self.labels)}
        dtype = accumulate_dtype(self.device)
        self.sums = torch.zeros(len(self.labels), len(self.layers), int(d), dtype=dtype,
                                device=self.device)
        self.counts = torch.zeros(len(self.labels), dtype=torch.long, device=self.device)
        self.token_counts = torch.zeros_like(self.counts)

    def arrays(self) -> dict[str, torch.Tensor]:
        """Every array this accumulator holds, by name."""
        return {"sums": self.sums, "counts": self.counts, "token_counts": self.token_counts}

    def add(self, labels: Sequence[str], means: torch.Tensor, n_tokens: torch.Tensor) -> None:
        """Add a batch: per-text pooled means ``[B, L, d]`` of ``n_tokens`` ``[B]`` tokens."""
        try:
            idx = torch.tensor([self._index[x] for x in labels], dtype=torch.long,
                               device=self.device)
        except KeyError as exc:
            raise CorpusError(f"unknown label {exc.args[0]!r}") from None
        n = n_tokens.to(self.device, torch.long)
        if bool((n <= 0).any()):
            raise CorpusError("a text has no tokens to pool (empty text?)")
        means = means.to(self.device, self.sums.dtype)
        if not bool(torch.isfinite(means).all()):
            raise CorpusError("pooled activations contain NaN or inf")
        self.sums.index_add_(0, idx, means)
        self.counts.index_add_(0, idx, torch.ones_like(idx))
        self.token_counts.index_add_(0, idx, n)

    def all_reduce(self, group: Any = None) -> None:
        """Sum every rank's statistics in place (torch.distributed, any backend)."""
        import torch.distributed as dist

        for t in self.arrays().values():
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)

    def to_stats(self) -> StoryStats:
        """The numpy :class:`StoryStats` of what was added."""
        return StoryStats(self.labels, self.layers, self.sums.cpu().double().numpy(),
                          self.counts.cpu().numpy(), self.token_counts.cpu().numpy())


class NeutralAccumulator:
    """Token statistics of neutral text at some layers, held on ``device``; fixed size.

    Feed it token activations ``[n, d]`` per layer (:meth:`add_layer`) and close each batch
    with :meth:`end_batch` (the token count is shared by every layer).

    >>> acc = NeutralAccumulator([0], d=2, dtype=torch.float64)
    >>> acc.add_layer(0, torch.tensor([[3.0, 4.0], [0.0, 1.0]])); acc.end_batch(2)
    >>> acc.add_layer(0, torch.tensor([[0.0, 2.0]])); acc.end_batch(1)
    >>> ns = acc.to_stats()
    >>> ns.n_tokens, ns.mean.round(4).tolist(), round(float(ns.norm_stats()[0][0]), 4)
    (3, [[1.0, 2.3333]], 2.6667)
    """

    def __init__(self, layers: Sequence[int], d: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        self.layers = tuple(int(x) for x in layers)
        self.device = torch.device(device)
        self._pos = {x: i for i, x in enumerate(self.layers)}
        wide = accumulate_dtype(self.device)
        n_layers = len(self.layers)
        self.mean = torch.zeros(n_layers, int(d), dtype=wide, device=self.device)
        self.m2 = torch.zeros(n_layers, int(d), int(d), dtype=dtype, device=self.device)
        self.norm_sum = torch.zeros(n_layers, dtype=wide, device=self.device)
        self.norm_hist = torch.zeros(n_layers, NORM_BINS, dtype=torch.long, device=self.device)
        self.n_tokens = 0
        self._pending: int | None = None

    def arrays(self) -> dict[str, torch.Tensor]:
        """Every array this accumulator holds, by name."""
        return {"mean": self.mean, "m2": self.m2, "norm_sum": self.norm_sum,
                "norm_hist": self.norm_hist}

    def add_layer(self, layer: int, tokens: torch.Tensor) -> None:
        """Fold one batch's token activations ``[n, d]`` at ``layer`` into the statistics."""
        li = self._pos[layer]
        n_b = int(tokens.shape[0])
        if self._pending is not None and self._pending != n_b:
            raise CorpusError(f"layer {layer} got {n_b} tokens, others {self._pending}")
        self._pending = n_b
        if n_b == 0:
            return
        x = tokens.to(self.device).float()
        mu_b = x.to(self.mean.dtype).mean(0)
        xc = (x - mu_b.to(x.dtype)).to(self.m2.dtype)
        n_a = self.n_tokens
        n = n_a + n_b
        delta = mu_b - self.mean[li]
        self.m2[li] += xc.T @ xc
        self.m2[li] += (torch.outer(delta, delta) * (n_a * n_b / n)).to(self.m2.dtype)
        self.mean[li] += delta * (n_b / n)
        norms = x.norm(dim=-1)
        self.norm_sum[li] += norms.to(self.norm_sum.dtype).sum()
        pos = torch.floor((torch.log2(norms.clamp_min(2.0 ** (NORM_LOG2_MIN - 1)))
                           - NORM_LOG2_MIN) * NORM_BINS_PER_OCTAVE)
        bins = pos.clamp(0, NORM_BINS - 1).long()
        self.norm_hist[li] += torch.bincount(bins, minlength=NORM_BINS)

    def end_batch(self, n_tokens: int) -> None:
        """Close a batch of ``n_tokens`` tokens (after every layer was added)."""
        if self._pending is not None and self._pending != n_tokens:
            raise CorpusError(f"batch closed with {n_tokens} tokens, layers saw {self._pending}")
        self.n_tokens += int(n_tokens)
        self._pending = None
        if n_tokens and not bool(torch.isfinite(self.norm_sum).all()):  # one sync per batch
            raise CorpusError("neutral token activations contain NaN or inf")

    def all_reduce(self, group: Any = None) -> None:
        """Merge every rank's statistics in place (exact, by Chan's formula).

        Each rank shifts its centred scatter to the global mean,
        ``m2_r + n_r (mean_r - mean)(mean_r - mean)^T``, and then every array is summed.
        """
        import torch.distributed as dist

        n = torch.tensor([self.n_tokens], dtype=torch.long, device=self.device)
        dist.all_reduce(n, group=group)
        total = int(n.item())
        if total == 0:
            return
        weighted = self.mean * self.n_tokens
        dist.all_reduce(weighted, group=group)
        mean = weighted / total
        delta = self.mean - mean
        if self.n_tokens:
            self.m2 += (torch.einsum("li,lj->lij", delta, delta) * self.n_tokens).to(
                self.m2.dtype)
        else:
            self.m2.zero_()
        for t in (self.m2, self.norm_sum, self.norm_hist):
            dist.all_reduce(t, group=group)
        self.mean = mean
        self.n_tokens = total

    def to_stats(self) -> NeutralStats:
        """The numpy :class:`NeutralStats` of what was added."""
        return NeutralStats(self.layers, self.n_tokens, self.mean.cpu().double().numpy(),
                            self.m2.cpu().numpy(), self.norm_hist.cpu().numpy(),
                            self.norm_sum.cpu().double().numpy())


def nbytes(arrays: dict[str, torch.Tensor]) -> int:
    """Bytes held by a dict of tensors (for the memory checks).

    >>> nbytes({"a": torch.zeros(2, 3)})
    24
    """
    return int(sum(t.numel() * t.element_size() for t in arrays.values()))

