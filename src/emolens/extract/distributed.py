"""Data-parallel extraction on torch.distributed: each rank reads its share, sums are all-reduced.

Launch any script that calls :func:`extract` (or :func:`collect_distributed`) the way the
field launches data-parallel jobs; every rank loads the model on its own device::

    torchrun --nproc_per_node 8 my_extract.py          # or: accelerate launch my_extract.py

    # my_extract.py
    from emolens.corpus import load_corpus
    from emolens.extract import extract
    from emolens.extract.distributed import init_distributed
    from emolens.loading import load_model

    ctx = init_distributed()                 # gloo on CPU, nccl on GPUs; device per rank
    lm = load_model("meta-llama/Llama-3.1-8B-Instruct", device=ctx.device)
    vecs = extract(lm, load_corpus("default"))      # every rank: the vectors of one pass
    if ctx.rank == 0:
        vecs.save("llama8b.emotions.safetensors")

Rank ``r`` of ``w`` takes shard ``r/w`` of the stories, the neutral dialogues and the
held-out texts (every w-th record in id order). Its running statistics (per-emotion sums
and counts, the neutral mean, centred scatter and norm histogram, the held-out hit counts)
are all-reduced: sums add, and the centred scatter is shifted to the global mean first
(Chan's formula), so the result equals one process's up to float rounding. Nothing is
pickled between ranks; only fixed-size tensors travel.

For job arrays without a process group (SLURM ``--array``), the same shards are written to
files by ``emolens extract --shard i/n`` and merged with ``emolens extract merge``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emolens.errors import EmolensError
from emolens.extract.run import (
    DEFAULT_TOKEN_SKIP,
    _accumulate,
    _check_not_empty,
    extraction_of,
)
from emolens.extract.shards import Extraction, PassStats
from emolens.extract.sweep import SweepCounts

if TYPE_CHECKING:  # pragma: no cover
    from emolens.corpus import Corpus
    from emolens.model import ModelAdapter as LanguageModel

__all__ = ["DistContext", "all_reduce_counts", "collect_distributed", "context",
           "init_distributed"]


@dataclass(frozen=True)
class DistContext:
    """This process's place in a process group: rank, world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str


def context(group: Any = None) -> DistContext | None:
    """The running process group as a :class:`DistContext`; None without one (or of 1 rank).

    >>> context() is None  # a plain process
    True
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    world = dist.get_world_size(group)
    if world < 2:
        return None
    backend = str(dist.get_backend(group))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if backend == "nccl" else torch.device("cpu")
    return DistContext(dist.get_rank(group), world, local, device, backend)


def init_distributed(backend: str | None = None) -> DistContext:
    """Join the process group that ``torchrun`` / ``accelerate launch`` describe in the env.

    ``backend`` defaults to ``nccl`` when CUDA is available and ``gloo`` otherwise; on GPUs
    each rank uses ``cuda:LOCAL_RANK``. A process started without a launcher (no
    ``WORLD_SIZE``) gets a one-rank context and no group, so the same script runs alone.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise EmolensError("backend nccl needs CUDA GPUs; use gloo on the CPU")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    return DistContext(rank, world, local, device, backend)


def _cost_all_reduce(cost: PassStats, device: torch.device, group: Any) -> PassStats:
    import torch.distributed as dist

    counts = torch.tensor([cost.texts, cost.tokens, cost.padded_tokens, cost.adapted],
                          dtype=torch.long, device=device)
    dist.all_reduce(counts, group=group)
    seconds = torch.tensor([cost.seconds], dtype=torch.float64, device=device)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX, group=group)  # the slowest rank's wall time
    texts, tokens, padded, adapted = (int(x) for x in counts.tolist())
    return PassStats(texts, tokens, padded, adapted, float(seconds.item()))


def all_reduce_counts(counts: SweepCounts, device: torch.device | str = "cpu",
                      group: Any = None) -> SweepCounts:
    """Held-out hit counts summed over every rank."""
    import torch.distributed as dist

    t = torch.tensor(np.concatenate([counts.top1, counts.topk, [counts.n]]), dtype=torch.long,
                     device=device)
    dist.all_reduce(t, group=group)
    values = t.cpu().numpy()
    k = len(counts.layers)
    return SweepCounts(counts.layers, values[:k].copy(), values[k:2 * k].copy(),
                       int(values[2 * k]))


def collect_distributed(lm: LanguageModel, corpus: Corpus, layers: Sequence[int], *,
                        token_skip: int = DEFAULT_TOKEN_SKIP, batch_size: int = 16,
                        split: str | None = "train", emotions: Sequence[str] | None = None,
                        with_neutral: bool = True, sort_by_length: bool = True,
                        early_exit: bool = True, progress: bool = False,
                        dtype: Any = "auto", group: Any = None,
                        head_layers: Sequence[int] | str | None = "auto") -> Extraction:
    """Whole-corpus statistics on every rank, each rank having read only its share.

    Call it on every rank of an initialised process group (:func:`init_distributed`);
    without one it is :func:`emolens.extract.collect` on the whole corpus. ``dtype`` is that
    of :func:`emolens.extract.collect`.
    """
    from emolens.extract.run import collect, compute_model, resolve_head_layers

    ctx = context(group)
    if ctx is None:
        return collect(lm, corpus, layers, token_skip=token_skip, batch_size=batch_size,
                       split=split, emotions=emotions, with_neutral=with_neutral,
                       sort_by_length=sort_by_length, early_exit=early_exit,
                       progress=progress, dtype=dtype, head_layers=head_layers)
    work = compute_model(lm, dtype)
    acc = _accumulate(work, corpus, layers, token_skip=token_skip, batch_size=batch_size,
                      shard=(ctx.rank, ctx.world_size), split=split, emotions=emotions,
                      with_neutral=with_neutral, sort_by_length=sort_by_length,
                      early_exit=early_exit, progress=progress,
                      head_layers=resolve_head_layers(head_layers, layers, lm.hidden_size))
    device = acc.stories.device
    acc.stories.all_reduce(group)
    if acc.scatter is not None:
        acc.scatter.all_reduce(group)
    if acc.neutral is not None:
        acc.neutral.all_reduce(group)
    acc.cost = _cost_all_reduce(acc.cost, device, group)
    _check_not_empty(corpus, int(acc.stories.counts.sum()),
                     acc.neutral.n_tokens if acc.neutral is not None else None, split)
    return extraction_of(acc, work, corpus, token_skip=token_skip, shard=None, split=split,
                         emotions=emotions)

