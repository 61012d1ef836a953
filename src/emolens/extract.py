"""Turn a corpus into emotion vectors: pooled activations -> sufficient statistics -> vectors.

Data flow::

    stories  --(one early-exited pass per batch, all layers, pooled in the hook)--> StoryStats
    neutral  --(same pass, real tokens after the skip)------------------------------> NeutralStats
    StoryStats + NeutralStats --(vectors.build_vectors)--> EmotionVectors (+ layer sweep)

Statistics are exact sums, so ``--shard i/n`` runs can be merged afterwards
(:func:`merge_stats`) into the same vectors a single pass gives.  Stories are read as
raw text (as in the study); neutral dialogues through the model's chat template.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emolens import hooks
from emolens.errors import CorpusError, VectorFileError
from emolens.vectors import (
    EmotionVectors,
    NeutralStats,
    StoryStats,
    build_vectors,
    classify,
    topk_accuracy,
)

if TYPE_CHECKING:  # pragma: no cover
    from emolens.corpus import Corpus, Record
    from emolens.model import ModelAdapter as LanguageModel

DEFAULT_TOKEN_SKIP = 50
DEFAULT_VARIANCE = 0.5
SHIPPED_VECTORS = "smollm2-135m-instruct.emotions.safetensors"


@dataclass
class PassStats:
    """What one feature pass did, for progress lines and benchmarks."""

    texts: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    adapted: int = 0  # texts shorter than 2 * token_skip, whose skip was halved
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="text", disable=not enabled, file=sys.stderr,
                leave=False)


def length_batches(lengths: Sequence[int], batch_size: int, sort: bool = True) -> list[list[int]]:
    """Index batches; with ``sort`` texts of similar length share a batch (less padding).

    >>> length_batches([5, 1, 4, 2], 2)
    [[1, 3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i]) if sort else \
        list(range(len(lengths)))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _tokenize(lm: LanguageModel, texts: Sequence[str], chat: bool, max_length: int
              ) -> list[list[int]]:
    if chat:
        return [ids[:max_length] for ids in (lm.tokenizer(t, add_special_tokens=False)["input_ids"]
                                             for t in texts)]
    return [ids[:max_length] for ids in lm.tokenizer(list(texts))["input_ids"]]


def _pad(lm: LanguageModel, rows: Sequence[list[int]]) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), lm.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):  # right padding; pooling counts real tokens either way
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return {"input_ids": ids.to(lm.device), "attention_mask": mask.to(lm.device)}


def pooled_features(lm: LanguageModel, texts: Sequence[str], layers: Sequence[int], *,
                    token_skip: int = DEFAULT_TOKEN_SKIP, batch_size: int = 16,
                    sort_by_length: bool = True, early_exit: bool = True, chat: bool = False,
                    max_length: int = 512, progress: bool = False, desc: str = "pooling"
                    ) -> tuple[np.ndarray, np.ndarray, PassStats]:
    """Mean residual [N, L, d] of each text over its tokens from ``token_skip`` on.

    Returns the means, the pooled token counts [N], and what the pass cost.
    """
    ids = _tokenize(lm, texts, chat, max_length)
    means = np.zeros((len(texts), len(layers), lm.hidden_size), np.float32)
    counts = np.zeros(len(texts), np.int64)
    stats = PassStats(texts=len(texts))
    started = time.perf_counter()
    with _progress(len(texts), desc, progress) as bar:
        for batch_idx in length_batches([len(r) for r in ids], batch_size, sort_by_length):
            batch = _pad(lm, [ids[i] for i in batch_idx])
            sums, n = lm.pooled(batch, layers, token_skip=token_skip, early_exit=early_exit)
            if bool((n == 0).any()):
                raise CorpusError("a text has no tokens to pool (empty text?)")
            means[batch_idx] = (sums / n[:, None, None]).numpy()
            counts[batch_idx] = n.numpy()
            real = batch["attention_mask"].sum(-1)
            stats.tokens += int(real.sum())
            stats.padded_tokens += int(batch["attention_mask"].numel())
            stats.adapted += int((real < 2 * token_skip).sum())
            bar.update(len(batch_idx))
    stats.seconds = time.perf_counter() - started
    return means, counts, stats


def neutral_statistics(lm: LanguageModel, texts: Sequence[str], layers: Sequence[int], *,
                       token_skip: int = DEFAULT_TOKEN_SKIP, batch_size: int = 16,
                       max_length: int = 512, progress: bool = False) -> NeutralStats:
    """Token-level statistics (sum, sum of outer products, norms) of neutral chat texts."""
    neutral = NeutralStats.empty(layers, lm.hidden_size)
    ids = _tokenize(lm, texts, True, max_length)
    with _progress(len(texts), "neutral", progress) as bar:
        for batch_idx in length_batches([len(r) for r in ids], batch_size):
            batch = _pad(lm, [ids[i] for i in batch_idx])
            keep = hooks.pool_mask(batch["attention_mask"], token_skip)
            with torch.inference_mode():
                store = hooks.run_capture(lambda b=batch: lm.forward(b), lm.layer_modules(layers),
                                          reduce=lambda _i, h, k=keep: h[k].float().cpu())
            neutral.add_tokens(np.stack([store[i].numpy() for i in layers]))
            bar.update(len(batch_idx))
    return neutral


def shard_of(records: Sequence[Record], shard: tuple[int, int] | None) -> list[Record]:
    """Records of shard ``i`` of ``n`` (by position in id order; every record in one shard)."""
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
class Extraction:
    """Statistics of one extraction run (a whole corpus or one shard)."""

    stories: StoryStats
    neutral: NeutralStats | None
    story_pass: PassStats
    token_skip: int
    corpus_fingerprint: str

    def save(self, path: str | Path) -> Path:
        """Save as ``PATH.stories.safetensors`` + ``PATH.neutral.safetensors`` + JSON."""
        path = Path(path)
        self.stories.save(path.with_suffix(".stories.safetensors"))
        if self.neutral is not None:
            self.neutral.save(path.with_suffix(".neutral.safetensors"))
        meta = {"token_skip": self.token_skip, "corpus_fingerprint": self.corpus_fingerprint,
                "has_neutral": self.neutral is not None}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta))
        tmp.replace(path.with_suffix(".json"))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Extraction:
        path = Path(path)
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise VectorFileError(f"cannot read shard statistics {path}: {exc}") from None
        neutral = NeutralStats.load(path.with_suffix(".neutral.safetensors")) \
            if meta["has_neutral"] else None
        return cls(StoryStats.load(path.with_suffix(".stories.safetensors")), neutral,
                   PassStats(), meta["token_skip"], meta["corpus_fingerprint"])


def collect(lm: LanguageModel, corpus: Corpus, layers: Sequence[int], *,
            token_skip: int = DEFAULT_TOKEN_SKIP, batch_size: int = 16,
            shard: tuple[int, int] | None = None, split: str | None = "train",
            emotions: Sequence[str] | None = None, with_neutral: bool = True,
            sort_by_length: bool = True, early_exit: bool = True,
            progress: bool = False) -> Extraction:
    """Sufficient statistics of a corpus (or one shard of it) at ``layers``."""
    stories = shard_of(corpus.stories(split=split, emotions=emotions), shard)
    if not stories and shard is None:
        raise CorpusError(f"corpus {corpus.source!r} has no clean stories"
                          + (f" in split {split!r}" if split else ""))
    labels = sorted({r.emotion for r in corpus.stories(split=split, emotions=emotions)})
    stats = StoryStats.empty(labels, layers, lm.hidden_size)
    means, counts, pass_stats = pooled_features(
        lm, [r.text for r in stories], layers, token_skip=token_skip, batch_size=batch_size,
        sort_by_length=sort_by_length, early_exit=early_exit, progress=progress,
        desc="stories")
    if stories:
        stats.add_batch([r.emotion for r in stories], means, counts)
    neutral = None
    if with_neutral:
        texts = [_chat_text(lm, r) for r in shard_of(corpus.neutral(), shard)]
        if not texts and shard is None:
            raise CorpusError(f"corpus {corpus.source!r} has no neutral dialogues "
                              "(needed for denoising and residual norms)")
        neutral = neutral_statistics(lm, texts, layers, token_skip=token_skip,
                                     batch_size=batch_size, progress=progress) if texts else \
            NeutralStats.empty(layers, lm.hidden_size)
    return Extraction(stats, neutral, pass_stats, token_skip, corpus.fingerprint())


def merge_stats(parts: Sequence[Extraction]) -> Extraction:
    """Exact merge of shard statistics (same token skip and corpus)."""
    if not parts:
        raise CorpusError("nothing to merge")
    first = parts[0]
    for p in parts[1:]:
        if p.token_skip != first.token_skip or p.corpus_fingerprint != first.corpus_fingerprint:
            raise VectorFileError("shards come from different corpora or token skips")
    stories, neutral = first.stories, first.neutral
    for p in parts[1:]:
        stories = stories.merge(p.stories)
        if neutral is not None and p.neutral is not None:
            neutral = neutral.merge(p.neutral)
    return Extraction(stories, neutral, PassStats(), first.token_skip, first.corpus_fingerprint)


def vectors_from(lm_info: dict[str, Any], extraction: Extraction, *,
                 variance: float = DEFAULT_VARIANCE) -> EmotionVectors:
    return build_vectors(extraction.stories, extraction.neutral, variance=variance,
                         model_info=lm_info, token_skip=extraction.token_skip,
                         corpus_fingerprint=extraction.corpus_fingerprint)


# ---- the layer sweep ------------------------------------------------------------------------
def layer_sweep(vectors: EmotionVectors, features: np.ndarray, labels: Sequence[str],
                center: np.ndarray | None = None, valence: dict[str, float] | None = None
                ) -> dict[str, Any]:
    """Score each layer: held-out top-1/top-5 accuracy and valence separation.

    ``features`` are pooled held-out activations [N, L, d] at ``vectors.layers``;
    ``center`` [L, d] is subtracted before the cosine (the training mean over emotions).
    Valence separation is the correlation, across emotions with a human valence rating,
    between each vector's rating and its projection on the (positive - negative) mean
    direction, a model-free check that the layer orders emotions by valence.
    """
    index = {e: i for i, e in enumerate(vectors.emotions)}
    truth = np.array([index[x] for x in labels])
    per_layer: dict[str, dict[str, float]] = {}
    for li, layer in enumerate(vectors.layers):
        scores = classify(features[:, li], vectors.matrix(layer),
                          None if center is None else center[li])
        entry = {"top1": topk_accuracy(scores, truth, 1), "top5": topk_accuracy(scores, truth, 5)}
        sep = _valence_separation(vectors.matrix(layer), vectors.emotions, valence or {})
        if sep is not None:
            entry["valence_r"] = sep
        per_layer[str(layer)] = entry
    best = max(vectors.layers, key=lambda x: (per_layer[str(x)]["top1"],
                                              per_layer[str(x)].get("valence_r", 0.0)))
    return {"recommended_layer": int(best), "per_layer": per_layer, "n_heldout": len(labels)}


def _valence_separation(matrix: np.ndarray, emotions: Sequence[str],
                        valence: dict[str, float]) -> float | None:
    rated = [(i, valence[e]) for i, e in enumerate(emotions) if e in valence]
    if len(rated) < 4 or not any(v > 0 for _, v in rated) or not any(v < 0 for _, v in rated):
        return None  # too few rated emotions to say anything
    idx, val = np.array([i for i, _ in rated]), np.array([v for _, v in rated])
    axis = matrix[idx[val > 0]].mean(0) - matrix[idx[val < 0]].mean(0)
    proj = matrix[idx] @ axis
    return float(np.corrcoef(proj, val)[0, 1])


def extract(lm: LanguageModel, corpus: Corpus, *, layers: Any = "all",
            token_skip: int = DEFAULT_TOKEN_SKIP, batch_size: int = 16,
            variance: float = DEFAULT_VARIANCE, sweep: bool = True,
            progress: bool = False, log: Callable[[str], None] | None = None) -> EmotionVectors:
    """The whole extraction: train-split statistics -> vectors -> held-out layer sweep.

    >>> from emolens import load_model                        # doctest: +SKIP
    >>> from emolens.corpus import load_corpus                # doctest: +SKIP
    >>> vecs = extract(load_model("default"), load_corpus("default"))  # doctest: +SKIP
    >>> vecs.default_layer                                    # doctest: +SKIP
    """
    say = log or (lambda _m: None)
    layer_ids = lm.resolve_layers(layers)
    run = collect(lm, corpus, layer_ids, token_skip=token_skip, batch_size=batch_size,
                  progress=progress)
    p = run.story_pass
    say(f"stories: {p.texts} texts, {p.tokens} tokens in {p.seconds:.1f}s "
        f"({p.tokens_per_second:.0f} tok/s); {p.adapted} shorter than 2x{token_skip} tokens "
        "pooled from their second half")
    vecs = vectors_from(lm.fingerprint(), run, variance=variance)
    heldout = corpus.stories(split="heldout", emotions=list(vecs.emotions))
    if sweep and heldout:
        from emolens.concepts import load_norms

        feats, _, _ = pooled_features(lm, [r.text for r in heldout], list(vecs.layers),
                                      token_skip=token_skip, batch_size=batch_size,
                                      progress=progress, desc="held-out")
        result = layer_sweep(vecs, feats, [r.emotion for r in heldout], vecs.center,
                             load_norms().valence)
        vecs = vecs.with_meta(recommended_layer=result["recommended_layer"],
                              layer_scores=result["per_layer"],
                              n_heldout=result["n_heldout"])
        best = result["per_layer"][str(result["recommended_layer"])]
        say(f"layer sweep: layer {result['recommended_layer']} best, held-out top-1 "
            f"{best['top1']:.3f}, top-5 {best['top5']:.3f} (n={result['n_heldout']})")
    return vecs.with_meta(story_tokens_per_second=round(p.tokens_per_second, 1))


# ---- vectors for the default model ----------------------------------------------------------
def shipped_vectors_path() -> Path:
    return Path(__file__).parent / "data" / SHIPPED_VECTORS


def default_vectors(lm: LanguageModel | None = None) -> EmotionVectors:
    """Emotion vectors for the embedded default model, shipped inside the package.

    They are rebuilt by ``scripts/build_default_vectors.py`` (about five minutes here)
    whenever the curated corpus changes; a test checks the file matches the corpus.
    """
    path = shipped_vectors_path()
    if not path.is_file():
        raise VectorFileError(f"the shipped default vectors are missing ({path}); run "
                              "scripts/build_default_vectors.py or pass --vectors")
    expect = lm.fingerprint() if lm is not None else None
    return EmotionVectors.load(path, expect_model=expect)
