"""Run an extraction on a model: pooled activations -> sufficient statistics -> vectors.

Data flow::

    stories  --(one early-exited pass per batch, all layers, pooled in the hook)--> StoryStats
    neutral  --(same pass, real tokens after the skip)------------------------------> NeutralStats
    StoryStats + NeutralStats --(build.build_vectors)--> EmotionVectors (+ layer sweep)

Memory does not grow with the corpus: each batch is folded into running per-emotion sums and
centred neutral moments (:mod:`emolens.extract.accumulate`) on the model's device, and the
held-out layer sweep keeps only hit counts; no ``[N, L, d]`` array is built. The pass runs in
the model's dtype, or in ``dtype`` (``"auto"``: bfloat16 where the CPU or GPU computes it
natively, see :func:`emolens.runtime.extraction_dtype`) on a cast copy of the weights.

Statistics are exact sums, so ``--shard i/n`` runs can be merged afterwards
(:func:`merge_stats`) into the same vectors a single pass gives. Each shard is one file that
records the model, the corpus, the token skip and its place ``i/n``, so a merge needs no model
and refuses shards that are missing, duplicated or from another run. Stories are read as raw
text (as in the study); neutral dialogues through the model's chat template.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emolens import hooks
from emolens.errors import CorpusError
from emolens.extract.accumulate import NeutralAccumulator, StoryAccumulator
from emolens.extract.scatter import (
    ScatterAccumulator,
    default_head_layers,
    fold_of,
)
from emolens.extract.shards import Extraction, PassStats
from emolens.extract.stats import NeutralStats
from emolens.fileformat import format_layers
from emolens.runtime import extraction_dtype

if TYPE_CHECKING:  # pragma: no cover
    from emolens.corpus import Corpus, Record
    from emolens.model import ModelAdapter as LanguageModel

__all__ = [
    "DEFAULT_TOKEN_SKIP",
    "collect",
    "compute_model",
    "length_batches",
    "neutral_statistics",
    "pooled_features",
    "pooled_means",
    "shard_of",
]

logger = logging.getLogger(__name__)

#: Tokens skipped at the start of each text before pooling (the study's N).
DEFAULT_TOKEN_SKIP = 50


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="text", disable=not enabled, file=sys.stderr,
                leave=False)


def length_batches(lengths: Sequence[int], batch_size: int, sort: bool = True) -> list[list[int]]:
    """Index batches; with ``sort`` texts of similar length share a batch (less padding).

    >>> length_batches([5, 1, 4, 2], 2)
    [[1, 3], [2, 0]]
    """
    if batch_size < 1:
        raise CorpusError(f"batch size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i]) if sort else \
        list(range(len(lengths)))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _tokenize(lm: LanguageModel, texts: Sequence[str], chat: bool, max_length: int
              ) -> list[list[int]]:
    if chat:  # the chat template already holds the special tokens
        return [ids[:max_length] for ids in (lm.tokenizer(t, add_special_tokens=False)["input_ids"]
                                             for t in texts)]
    return [ids[:max_length] for ids in lm.tokenizer(list(texts))["input_ids"]]


def compute_model(lm: LanguageModel, dtype: Any = None) -> LanguageModel:
    """The model an extraction pass runs on: ``lm`` itself, or a copy cast to ``dtype``.

    ``dtype`` None keeps the model's own; ``"auto"`` is bfloat16 for a float32 model on a CPU
    or GPU that computes bfloat16 natively (:func:`emolens.runtime.extraction_dtype`), else
    the model's own. A cast copy shares nothing with ``lm`` (its weights are new tensors, so
    ``lm`` stays exactly as it was) and carries the same fingerprint.

    >>> compute_model(lm) is lm, compute_model(lm, "float32") is lm
    (True, True)
    >>> half = compute_model(lm, "bfloat16")
    >>> half.dtype, lm.dtype, half.fingerprint() == lm.fingerprint()
    (torch.bfloat16, torch.float32, True)
    """
    import copy

    want = extraction_dtype(dtype, lm.dtype, lm.device)
    if want == lm.dtype:
        return lm
    # every parameter replaced by its cast copy through deepcopy's memo: tied weights stay
    # tied, and the peak is the original plus the cast weights (not two full copies)
    memo: dict[int, Any] = {
        id(p): torch.nn.Parameter(p.detach().to(want), requires_grad=False)
        for p in lm.model.parameters()}
    clone = copy.deepcopy(lm.model, memo)
    out = type(lm)(clone, lm.tokenizer, name=lm.name, source=lm.source)
    for key in ("revision",):
        if hasattr(lm, key):
            setattr(out, key, getattr(lm, key))
    return out


def _story_ids(lm: LanguageModel, items: Sequence[str | Record], chat: bool, max_length: int
               ) -> tuple[list[list[int]], list[int]]:
    """Token rows, and the token where each row's pooling starts (-1: the token-skip rule):
    a record whose ``turns`` end with the assistant's message (the dialogue variant) is read
    through the chat template up to the end of that message and pooled over its content."""
    rows, starts = [], []
    for x in items:
        turns = getattr(x, "turns", None)
        if turns and turns[-1]["role"] == "assistant":
            enc = lm.encode_chat(turns, add_generation_prompt=False)
            start, end = enc.message_tokens[-1]
            rows.append(enc.input_ids[:min(end, max_length)])
        else:
            rows += _tokenize(lm, [getattr(x, "text", x)], chat, max_length)
            start = -1
        starts.append(start)
    return rows, starts


@torch.inference_mode()
def pooled_means(lm: LanguageModel, batch: dict[str, torch.Tensor], layers: Sequence[int],
                  token_skip: int, early_exit: bool, starts: Sequence[int] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-text float32 pooled means ``[B, L, d]`` and pooled-token counts ``[B]``.

    The one pooling rule of the read path (:func:`emolens.hooks.pool_mask` over the
    tokens :meth:`~emolens.model.ModelAdapter.pool_exclude` leaves, massive-norm sinks
    dropped per layer), reduced inside each hook (no ``[B, T, d]`` per layer is kept) and
    stopped after the deepest layer. A row whose ``starts`` entry is ``>= 0`` pools every
    content token from that token on, unskipped (an assistant's reply, see :func:`_story_ids`).
    """
    exclude = lm.pool_exclude(batch)
    mask = hooks.pool_mask(batch["attention_mask"], token_skip, exclude)
    if starts is not None:
        at = torch.as_tensor(starts, device=mask.device)[:, None]
        ranks = hooks.token_ranks(batch["attention_mask"]).to(mask.device)
        mask = torch.where(at >= 0, (ranks >= at) & ~exclude.to(mask.device), mask)
    store = hooks.run_capture(lambda: lm.forward(batch), lm.layer_modules(layers),
                              reduce=lambda _i, h: hooks.pooled_mean(h, mask),
                              early_exit=early_exit)
    device = mask.device
    return torch.stack([store[i].to(device) for i in layers], dim=1), mask.sum(-1)


def _story_batches(lm: LanguageModel, texts: Sequence[str | Record], layers: Sequence[int], *,
                   token_skip: int, batch_size: int, sort_by_length: bool, early_exit: bool,
                   chat: bool, max_length: int, progress: bool, desc: str, stats: PassStats
                   ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Yield ``(indices, means [B, L, d], counts [B])`` of texts or records (chats are pooled
    over the assistant's reply, see :func:`_story_ids`) batch by batch; fill ``stats``."""
    ids, starts = _story_ids(lm, texts, chat, max_length)
    stats.texts += len(texts)
    started = time.perf_counter()
    with _progress(len(texts), desc, progress) as bar:
        for batch_idx in length_batches([len(r) for r in ids], batch_size, sort_by_length):
            batch = lm.pad([ids[i] for i in batch_idx])
            rows = [starts[i] for i in batch_idx]
            means, n = pooled_means(lm, batch, layers, token_skip, early_exit, rows)
            if bool((n == 0).any()):
                raise CorpusError("a text has no tokens to pool (empty text?)")
            real = batch["attention_mask"].sum(-1)
            stats.tokens += int(real.sum())
            stats.padded_tokens += int(batch["attention_mask"].numel())
            stats.adapted += int(((real < 4 * token_skip).cpu() & (torch.tensor(rows) < 0)).sum())
            yield batch_idx, means, n
            bar.update(len(batch_idx))
    stats.seconds += time.perf_counter() - started


def pooled_features(lm: LanguageModel, texts: Sequence[str | Record], layers: Sequence[int], *,
                    token_skip: int = DEFAULT_TOKEN_SKIP, batch_size: int = 16,
                    sort_by_length: bool = True, early_exit: bool = True, chat: bool = False,
                    max_length: int = 512, progress: bool = False, desc: str = "pooling"
                    ) -> tuple[np.ndarray, np.ndarray, PassStats]:
    """Mean residual ``[N, L, d]`` of each text over its content tokens from ``token_skip`` on.

    Returns the means, the pooled token counts ``[N]``, and what the pass cost. A text
    shorter than ``4 * token_skip`` content tokens skips a quarter of them
    (:func:`emolens.hooks.effective_skip`); the sink and special tokens are never pooled.
    This keeps one row per text, for analyses that need them; an extraction
    (:func:`collect`) folds each batch into running sums instead.

    >>> means, counts, cost = pooled_features(lm, ["The rain fell all night.", "Hi there."],
    ...                                       [1, 3], token_skip=2)
    >>> means.shape, bool((counts > 0).all()), cost.texts
    ((2, 2, 32), True, 2)
    """
    means = np.zeros((len(texts), len(layers), lm.hidden_size), np.float32)
    counts = np.zeros(len(texts), np.int64)
    stats = PassStats()
    for batch_idx, pooled, n in _story_batches(
            lm, texts, layers, token_skip=token_skip, batch_size=batch_size,
            sort_by_length=sort_by_length, early_exit=early_exit, chat=chat,
            max_length=max_length, progress=progress, desc=desc, stats=stats):
        means[batch_idx] = pooled.float().cpu().numpy()
        counts[batch_idx] = n.cpu().numpy()
    return means, counts, stats


def _neutral_pass(lm: LanguageModel, texts: Sequence[str], acc: NeutralAccumulator, *,
                  token_skip: int, batch_size: int, max_length: int, progress: bool) -> None:
    """Fold neutral chat texts into ``acc``, reduced inside the hooks batch by batch."""
    ids = _tokenize(lm, texts, True, max_length)
    modules = lm.layer_modules(acc.layers)
    with _progress(len(texts), "neutral", progress) as bar:
        for batch_idx in length_batches([len(r) for r in ids], batch_size):
            batch = lm.pad([ids[i] for i in batch_idx])
            keep = hooks.pool_mask(batch["attention_mask"], token_skip, lm.pool_exclude(batch))
            with torch.inference_mode():
                hooks.run_capture(lambda b=batch: lm.forward(b), modules,
                                  reduce=lambda i, h, k=keep: acc.add_layer(i, h[k.to(h.device)]))
            acc.end_batch(int(keep.sum()))
            bar.update(len(batch_idx))


def neutral_statistics(lm: LanguageModel, texts: Sequence[str], layers: Sequence[int], *,
                       token_skip: int = DEFAULT_TOKEN_SKIP, batch_size: int = 16,
                       max_length: int = 512, progress: bool = False,
                       dtype: torch.dtype = torch.float32) -> NeutralStats:
    """Token-level statistics (mean, centred scatter, norms) of neutral chat texts.

    Fixed size whatever the number of texts; the scatter is kept in ``dtype``.

    >>> chat = lm.format_chat([{"role": "user", "content": "What is two plus two?"},
    ...                        {"role": "assistant", "content": "Four."}])
    >>> ns = neutral_statistics(lm, [chat], [0, 2], token_skip=1)
    >>> ns.layers, ns.d, ns.n_tokens > 0
    ((0, 2), 32, True)
    """
    acc = NeutralAccumulator(layers, lm.hidden_size, lm.device, dtype=dtype)
    _neutral_pass(lm, texts, acc, token_skip=token_skip, batch_size=batch_size,
                  max_length=max_length, progress=progress)
    return acc.to_stats()


def shard_of(records: Sequence[Record], shard: tuple[int, int] | None) -> list[Record]:
    """Records of shard ``i`` of ``n`` (by position in id order; every record in one shard).

    >>> from emolens.corpus import Record
    >>> recs = [Record(id=f"r{k}", kind="neutral", text="") for k in range(5)]
    >>> [r.id for r in shard_of(recs, (1, 2))]
    ['r1', 'r3']
    """
    if shard is None:
        return list(records)
    i, n = shard
    if not 0 <= i < n:
        raise CorpusError(f"shard {i}/{n} is out of range")
    ordered = sorted(records, key=lambda r: r.id)
    return ordered[i::n]


def _chat_text(lm: LanguageModel, record: Record) -> str:
    if record.turns:
        return lm.format_chat(record.turns, add_generation_prompt=False)
    return record.text


@dataclass
class _Accumulated:
    """The running statistics of one pass (a whole corpus, a shard or a rank's share)."""

    stories: StoryAccumulator
    neutral: NeutralAccumulator | None
    cost: PassStats
    scatter: ScatterAccumulator | None = None


def _accumulate(lm: LanguageModel, corpus: Corpus, layers: Sequence[int], *,
                token_skip: int, batch_size: int, shard: tuple[int, int] | None,
                split: str | None, emotions: Sequence[str] | None, with_neutral: bool,
                sort_by_length: bool, early_exit: bool, progress: bool,
                head_layers: Sequence[int] | None = None) -> _Accumulated:
    """Fold the stories (and neutral dialogues) of ``shard`` into fixed-size accumulators."""
    every = corpus.stories(split=split, emotions=emotions)
    labels = sorted({r.emotion for r in every})
    stories = shard_of(every, shard)
    acc = StoryAccumulator(labels, layers, lm.hidden_size, lm.device)
    cost = PassStats()
    story_labels = [r.emotion for r in stories]
    scatter, head_idx = None, []
    if head_layers:
        head_idx = [list(layers).index(x) for x in head_layers]
        scatter = ScatterAccumulator(labels, head_layers, lm.hidden_size, lm.device)
        story_folds = [fold_of(r.id) for r in stories]
    for batch_idx, means, n in _story_batches(
            lm, stories, layers, token_skip=token_skip,
            batch_size=batch_size, sort_by_length=sort_by_length, early_exit=early_exit,
            chat=False, max_length=512, progress=progress, desc="stories", stats=cost):
        acc.add([story_labels[i] for i in batch_idx], means, n)
        if scatter is not None:
            scatter.add([story_labels[i] for i in batch_idx], means[:, head_idx],
                        [story_folds[i] for i in batch_idx])
    neutral = None
    if with_neutral:
        neutral = NeutralAccumulator(layers, lm.hidden_size, lm.device)
        texts = [_chat_text(lm, r) for r in shard_of(corpus.neutral(), shard)]
        _neutral_pass(lm, texts, neutral, token_skip=token_skip, batch_size=batch_size,
                      max_length=512, progress=progress)
    return _Accumulated(acc, neutral, cost, scatter)


def _check_not_empty(corpus: Corpus, stories: int, neutral: int | None,
                     split: str | None) -> None:
    if stories == 0:
        raise CorpusError(f"corpus {corpus.source!r} has no clean stories"
                          + (f" in split {split!r}" if split else ""))
    if neutral == 0:
        raise CorpusError(f"corpus {corpus.source!r} has no neutral dialogues "
                          "(needed for denoising and residual norms)")


def collect(lm: LanguageModel, corpus: Corpus, layers: Sequence[int], *,
            token_skip: int = DEFAULT_TOKEN_SKIP, batch_size: int = 16,
            shard: tuple[int, int] | None = None, split: str | None = "train",
            emotions: Sequence[str] | None = None, with_neutral: bool = True,
            sort_by_length: bool = True, early_exit: bool = True,
            progress: bool = False, dtype: Any = "auto",
            head_layers: Sequence[int] | str | None = "auto") -> Extraction:
    """Sufficient statistics of a corpus (or one shard of it) at ``layers``.

    Shard ``(i, n)`` takes every n-th story and neutral dialogue in id order; the labels are
    those of the whole corpus, so every shard's statistics line up for :func:`merge_stats`.
    Memory is fixed whatever the corpus size (running sums on the model's device). ``dtype``
    is that of :func:`extract` (``"auto"``: bfloat16 where computed natively; ``None``: the
    model's own), the pass running on a cast copy of the model (:func:`compute_model`).
    ``head_layers`` are the layers that get the statistics of a read-out head
    (``"auto"``: :func:`~emolens.extract.scatter.default_head_layers`; None: no head).

    >>> from emolens.corpus import Corpus, Record
    >>> recs = [Record(id=f"story/{e}/{k}", kind="story", emotion=e, text=f"{e} day {k}. " * 4)
    ...         for e in ("calm", "sad") for k in range(3)]
    >>> recs.append(Record(id="neutral/0", kind="neutral", text="", turns=[
    ...     {"role": "user", "content": "Two plus two?"}, {"role": "assistant", "content": "4."}]))
    >>> corpus = Corpus(recs, "toy")
    >>> from emolens.extract.shards import merge_stats
    >>> parts = [collect(lm, corpus, [1, 2], token_skip=1, shard=(i, 2), dtype=None)
    ...          for i in range(2)]
    >>> merged = merge_stats(parts)
    >>> whole = collect(lm, corpus, [1, 2], token_skip=1, dtype=None)
    >>> bool(np.allclose(merged.stories.sums, whole.stories.sums, atol=1e-5))
    True
    >>> merge_stats(parts[:1])
    Traceback (most recent call last):
    emolens.errors.VectorFileError: shard 1/2 is missing (got 1 of 2 shards: 0/2)
    """
    work = compute_model(lm, dtype)
    acc = _accumulate(work, corpus, layers, token_skip=token_skip, batch_size=batch_size,
                      shard=shard, split=split, emotions=emotions, with_neutral=with_neutral,
                      sort_by_length=sort_by_length, early_exit=early_exit, progress=progress,
                      head_layers=resolve_head_layers(head_layers, layers, lm.hidden_size))
    if shard is None:
        _check_not_empty(corpus, int(acc.stories.counts.sum()),
                         acc.neutral.n_tokens if acc.neutral is not None else None, split)
    return extraction_of(acc, lm, corpus, token_skip=token_skip, shard=shard, split=split,
                         emotions=emotions)


def resolve_head_layers(head_layers: Sequence[int] | str | None, layers: Sequence[int],
                        d: int) -> list[int]:
    """The read-out head's layers: ``"auto"`` picks them, a list must be among ``layers``.

    >>> resolve_head_layers("auto", [1, 2], 32), resolve_head_layers(None, [1, 2], 32)
    ([1, 2], [])
    """
    if head_layers is None:
        return []
    if isinstance(head_layers, str):
        if head_layers != "auto":
            raise CorpusError(f"head_layers must be 'auto', None or a list, got {head_layers!r}")
        return list(default_head_layers(layers, d))
    wanted = [int(x) for x in head_layers]
    missing = [x for x in wanted if x not in layers]
    if missing:
        raise CorpusError(f"head layers {format_layers(missing)} are not extracted layers")
    return sorted(set(wanted))


def extraction_of(acc: _Accumulated, lm: LanguageModel, corpus: Corpus, *, token_skip: int,
                  shard: tuple[int, int] | None, split: str | None,
                  emotions: Sequence[str] | None) -> Extraction:
    """An :class:`Extraction` (numpy statistics and provenance) from running accumulators."""
    return Extraction(acc.stories.to_stats(),
                      acc.neutral.to_stats() if acc.neutral is not None else None, acc.cost,
                      token_skip, corpus.fingerprint(), model=lm.fingerprint(), shard=shard,
                      split=split,
                      emotions=tuple(sorted(emotions)) if emotions is not None else None,
                      scatter=acc.scatter.to_stats() if acc.scatter is not None else None,
                      corpus=corpus.provenance())
