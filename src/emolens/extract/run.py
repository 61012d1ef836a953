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
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emolens import fileformat, hooks
from emolens.errors import CorpusError, VectorFileError
from emolens.extract.accumulate import NeutralAccumulator, StoryAccumulator
from emolens.extract.scatter import (
    ScatterAccumulator,
    ScatterStats,
    default_head_layers,
    fold_of,
)
from emolens.extract.stats import NORM_BINS_SCHEMA, NeutralStats, StoryStats
from emolens.fileformat import Field, format_layers
from emolens.modelcheck import check_model, describe_model
from emolens.runtime import extraction_dtype

if TYPE_CHECKING:  # pragma: no cover
    from emolens.corpus import Corpus, Record
    from emolens.model import ModelAdapter as LanguageModel

__all__ = [
    "DEFAULT_TOKEN_SKIP",
    "Extraction",
    "PassStats",
    "collect",
    "compute_model",
    "length_batches",
    "merge_stats",
    "neutral_statistics",
    "pooled_features",
    "shard_of",
]

logger = logging.getLogger(__name__)

#: Tokens skipped at the start of each text before pooling (the study's N).
DEFAULT_TOKEN_SKIP = 50


@dataclass
class PassStats:
    """What one feature pass did, for progress lines and benchmarks."""

    texts: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    adapted: int = 0  # texts shorter than 4 * token_skip, whose skip was shortened
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        """Real (unpadded) tokens per second of wall time."""
        return self.tokens / self.seconds if self.seconds else 0.0

    def __add__(self, other: PassStats) -> PassStats:
        return PassStats(self.texts + other.texts, self.tokens + other.tokens,
                         self.padded_tokens + other.padded_tokens,
                         self.adapted + other.adapted, self.seconds + other.seconds)


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
def _pooled_means(lm: LanguageModel, batch: dict[str, torch.Tensor], layers: Sequence[int],
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
            means, n = _pooled_means(lm, batch, layers, token_skip, early_exit, rows)
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


# --------------------------------------------------------------------------------------------
# the statistics of one run, and their shard files
# --------------------------------------------------------------------------------------------

_SHARD_MODEL_FIELDS = {
    "name": Field("str", null=True), "architecture": Field("str", null=True),
    "n_layers": Field("int"), "hidden_size": Field("int"),
    "vocab_size": Field("int", null=True), "config_hash": Field("str", null=True),
}
SHARD_SCHEMA: dict[str, Field] = {
    "labels": Field("list[str]"),
    "layers": Field("layers"),
    "model": Field("object", fields=_SHARD_MODEL_FIELDS),
    "corpus_fingerprint": Field("str"),
    "token_skip": Field("int"),
    "shard": Field("shard", null=True),
    "split": Field("str", null=True),
    "emotions": Field("list[str]", null=True),
    "neutral": Field("object", null=True,
                     fields={"layers": Field("layers"), "n_tokens": Field("int"),
                             "norm_bins": Field("object", required=False,
                                                fields=NORM_BINS_SCHEMA)}),
    "emolens_version": Field("str"),
    "story_pass": Field("object", required=False),
    "scatter": Field("object", null=True, required=False),
}
_REEXTRACT = "re-extract it with this emolens (emolens extract --shard i/n)"


def shard_path(path: str | os.PathLike[str]) -> Path:
    """The file a shard prefix stands for: ``PREFIX.shard.safetensors`` (a ``.safetensors``
    path is taken as it is).

    >>> shard_path("runs/part0").name, shard_path("runs/p.safetensors").name
    ('part0.shard.safetensors', 'p.safetensors')
    """
    p = Path(path)
    return p if p.name.endswith(".safetensors") else p.with_name(p.name + ".shard.safetensors")


def _old_format_files(path: str | os.PathLike[str]) -> list[Path]:
    p = Path(path)
    try:
        candidates = [p.with_suffix(".json"), p.with_suffix(".stories.safetensors")]
    except ValueError:  # a path with no name
        return []
    return [c for c in candidates if c.is_file()]


@dataclass
class Extraction:
    """Statistics of one extraction run (a whole corpus or one shard) and what made them.

    ``model`` is the model's fingerprint, ``shard`` ``(i, n)`` for shard ``i`` of ``n``
    (None for a whole corpus), ``split`` and ``emotions`` the corpus selection. A shard is
    saved as one safetensors file, so a crash during the save leaves the old file or the
    new one, never a mix.
    """

    stories: StoryStats
    neutral: NeutralStats | None
    story_pass: PassStats
    token_skip: int
    corpus_fingerprint: str
    model: dict[str, Any] | None = None
    shard: tuple[int, int] | None = None
    split: str | None = "train"
    emotions: tuple[str, ...] | None = None
    emolens_version: str = field(default_factory=fileformat.emolens_version)
    #: The file it was loaded from, for messages.
    source: str | None = None
    #: What the read-out head is fitted from (None: no head).
    scatter: ScatterStats | None = None

    def __post_init__(self) -> None:
        if self.shard is not None:
            i, n = (int(x) for x in self.shard)
            if not 0 <= i < n:
                raise CorpusError(f"shard {i}/{n} is out of range")
            self.shard = (i, n)
        if self.emotions is not None:
            self.emotions = tuple(self.emotions)

    def describe(self) -> str:
        """How messages name these statistics: their file, or their shard."""
        if self.source:
            return self.source
        return f"shard {self.shard[0]}/{self.shard[1]}" if self.shard else "whole-corpus statistics"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write one file, ``PATH.shard.safetensors`` (or ``PATH`` if it ends in
        ``.safetensors``), atomically; return its path.

        The header records the model, corpus fingerprint, token skip, shard ``i/n``, corpus
        selection and emolens version, so :func:`merge_stats` can check shards without the
        model.
        """
        if self.model is None:
            raise VectorFileError("cannot save statistics that do not record their model")
        header: dict[str, Any] = {
            **self.stories.header(),
            "model": self.model,
            "corpus_fingerprint": self.corpus_fingerprint,
            "token_skip": int(self.token_skip),
            "shard": list(self.shard) if self.shard else None,
            "split": self.split,
            "emotions": list(self.emotions) if self.emotions is not None else None,
            "neutral": self.neutral.header() if self.neutral is not None else None,
            "emolens_version": self.emolens_version,
            "story_pass": {"texts": self.story_pass.texts, "tokens": self.story_pass.tokens,
                           "padded_tokens": self.story_pass.padded_tokens,
                           "adapted": self.story_pass.adapted,
                           "seconds": round(self.story_pass.seconds, 3)},
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "scatter": self.scatter.header() if self.scatter is not None else None,
        }
        tensors = self.stories.tensors("stories.")
        if self.scatter is not None:
            tensors.update(self.scatter.tensors("scatter."))
        if self.neutral is not None:
            if self.neutral.layers != self.stories.layers:
                raise VectorFileError("story and neutral statistics cover different layers")
            tensors.update(self.neutral.tensors("neutral."))
        return fileformat.write(shard_path(path), fileformat.KIND_SHARD, header, tensors)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Extraction:
        """Read a shard written by :meth:`save` (a prefix or the file itself).

        Shards of older emolens versions, which do not record their model, corpus and
        place, are refused with a line saying to re-extract them.

        >>> import tempfile, pathlib
        >>> s = StoryStats.empty(["calm", "sad"], [1], d=lm.hidden_size)
        >>> run = Extraction(s, None, PassStats(), 0, "toy", model=lm.fingerprint(),
        ...                  shard=(0, 2))
        >>> p = run.save(pathlib.Path(tempfile.mkdtemp()) / "part0")
        >>> back = Extraction.load(p)
        >>> p.name, back.shard, back.model == lm.fingerprint()
        ('part0.shard.safetensors', (0, 2), True)
        """
        target = shard_path(path)
        if not target.exists():
            old = _old_format_files(path)
            if old:
                raise VectorFileError(f"{path} is a shard written by an older emolens, without "
                                      f"the model, corpus and shard it belongs to; {_REEXTRACT}")
            raise VectorFileError(f"extraction shard file not found: {target}")
        header, tensors = fileformat.read_raw(target, "extraction shard")
        if header.get("kind") in (fileformat.KIND_STORY, fileformat.KIND_NEUTRAL):
            raise VectorFileError(f"{target} holds only part of an older shard; {_REEXTRACT}")
        fileformat.check_kind(header, fileformat.KIND_SHARD, target, _REEXTRACT)
        fileformat.validate(header, SHARD_SCHEMA, target, _REEXTRACT)
        stories = StoryStats.from_file_parts(header, tensors, target, "stories.")
        neutral = None
        if header["neutral"] is not None:
            neutral = NeutralStats.from_file_parts(header["neutral"], tensors, target,
                                                   "neutral.")
            if neutral.layers != stories.layers:
                raise VectorFileError(f"{target}: story and neutral statistics cover "
                                      "different layers")
        scatter = None
        if header.get("scatter") is not None:
            scatter = ScatterStats.from_file_parts(header["scatter"], tensors, target,
                                                   "scatter.")
        raw_pass = header.get("story_pass") or {}
        try:
            story_pass = PassStats(**{k: raw_pass[k] for k in
                                      ("texts", "tokens", "padded_tokens", "adapted", "seconds")
                                      if k in raw_pass})
        except TypeError:  # pragma: no cover - only informative
            story_pass = PassStats()
        shard = tuple(header["shard"]) if header["shard"] is not None else None
        return cls(stories, neutral, story_pass, header["token_skip"],
                   header["corpus_fingerprint"], model=header["model"], shard=shard,
                   split=header["split"], emotions=header["emotions"],
                   emolens_version=header["emolens_version"], source=str(target),
                   scatter=scatter)


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
                      scatter=acc.scatter.to_stats() if acc.scatter is not None else None)


def _differences(a: Extraction, b: Extraction) -> list[str]:
    out = []
    if (a.model is None) != (b.model is None):
        out.append("model (one does not record it)")
    elif a.model is not None:
        try:
            check_model(a.model, b.model)
        except VectorFileError:
            out.append(f"model ({describe_model(a.model)} vs {describe_model(b.model)})")
    if a.corpus_fingerprint != b.corpus_fingerprint:
        out.append(f"corpus ({a.corpus_fingerprint[:12]} vs {b.corpus_fingerprint[:12]})")
    if a.token_skip != b.token_skip:
        out.append(f"token skip ({a.token_skip} vs {b.token_skip})")
    if a.stories.layers != b.stories.layers:
        out.append(f"layers ({format_layers(a.stories.layers)} vs "
                   f"{format_layers(b.stories.layers)})")
    if a.stories.d != b.stories.d:
        out.append(f"width ({a.stories.d} vs {b.stories.d})")
    if (a.split, a.emotions, a.stories.labels) != (b.split, b.emotions, b.stories.labels):
        out.append("corpus selection (split or emotions)")
    if (a.neutral is None) != (b.neutral is None):
        out.append("neutral statistics (one has none)")
    if (a.scatter is None) != (b.scatter is None) or (
            a.scatter is not None and b.scatter is not None
            and a.scatter.layers != b.scatter.layers):
        out.append("read-out head statistics (layers or presence)")
    return out


def merge_stats(parts: Sequence[Extraction]) -> Extraction:
    """Exact merge of the shards ``0/n .. n-1/n`` of one run into whole-corpus statistics.

    Refused with one VectorFileError line: shards of another model, corpus, token skip,
    layer set or corpus selection; a shard given twice; a missing shard; a whole-corpus
    extraction mixed with shards. The order of ``parts`` does not matter.
    """
    if not parts:
        raise CorpusError("nothing to merge")
    first = parts[0]
    for p in parts[1:]:
        diffs = _differences(first, p)
        if diffs:
            raise VectorFileError(f"cannot merge {p.describe()} with {first.describe()}: "
                                  f"different {'; '.join(diffs)}")
    whole = [p for p in parts if p.shard is None]
    if whole:
        if len(parts) == 1:
            return parts[0]
        raise VectorFileError(f"cannot merge {whole[0].describe()}: it covers the whole "
                              "corpus, not one shard")
    counts = sorted({p.shard[1] for p in parts})  # type: ignore[index]
    if len(counts) > 1:
        places = ", ".join(f"{p.describe()} is {p.shard[0]}/{p.shard[1]}"  # type: ignore[index]
                           for p in parts)
        raise VectorFileError(f"shards of different splittings cannot merge: {places}")
    n = counts[0]
    by_index: dict[int, Extraction] = {}
    for p in parts:
        i = p.shard[0]  # type: ignore[index]
        if i in by_index:
            raise VectorFileError(f"shard {i}/{n} is given twice ({by_index[i].describe()} and "
                                  f"{p.describe()})")
        by_index[i] = p
    missing = [i for i in range(n) if i not in by_index]
    if missing:
        got = ", ".join(f"{i}/{n}" for i in sorted(by_index))
        plural = "s" if len(missing) > 1 else ""
        verb = "are" if len(missing) > 1 else "is"
        raise VectorFileError(f"shard{plural} {', '.join(f'{i}/{n}' for i in missing)} {verb} "
                              f"missing (got {len(parts)} of {n} shards: {got})")
    ordered = [by_index[i] for i in range(n)]  # a fixed order: the same sums on every rerun
    stories, neutral, cost = ordered[0].stories, ordered[0].neutral, ordered[0].story_pass
    scatter = ordered[0].scatter
    for p in ordered[1:]:
        stories = stories.merge(p.stories)
        if scatter is not None and p.scatter is not None:
            scatter = scatter.merge(p.scatter)
        if neutral is not None and p.neutral is not None:
            neutral = neutral.merge(p.neutral)
        cost = cost + p.story_pass
    return Extraction(stories, neutral, cost, first.token_skip, first.corpus_fingerprint,
                      model=first.model, shard=None, split=first.split, emotions=first.emotions,
                      scatter=scatter)
