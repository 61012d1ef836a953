"""The whole extraction in one call: statistics (one process or data-parallel ranks), the
vectors, and the held-out layer sweep that recommends a read-out layer."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from emolens.errors import CorpusError
from emolens.extract import distributed as dist
from emolens.extract.build import DEFAULT_VARIANCE, vectors_from
from emolens.extract.run import DEFAULT_TOKEN_SKIP, collect, compute_model, shard_of
from emolens.extract.sweep import _sweep_result, sweep_counts
from emolens.vectors import EmotionVectors

if TYPE_CHECKING:  # pragma: no cover
    from emolens.corpus import Corpus
    from emolens.model import ModelAdapter as LanguageModel

__all__ = ["extract"]
logger = logging.getLogger(__name__)


def extract(lm: LanguageModel, corpus: Corpus, *, layers: Any = "all",
            token_skip: int = DEFAULT_TOKEN_SKIP, batch_size: int = 16,
            variance: float = DEFAULT_VARIANCE, sweep: bool = True,
            progress: bool = False, dtype: Any = "auto", distributed: bool | None = None,
            group: Any = None, head_layers: Any = "auto") -> EmotionVectors:
    """The whole extraction: train-split statistics -> vectors -> held-out layer sweep.

    ``dtype="auto"`` runs the pass in bfloat16 where the CPU or GPU computes it natively and
    the model is float32 (checked: every emotion's vector within cosine 0.99 of its float32
    twin; see ARCHITECTURE.md), else in the model's dtype; pass ``None`` or ``"float32"`` to
    keep float32. Under torch.distributed (``torchrun`` / ``accelerate launch``; on by default
    when a process group of more than one rank is initialised) each rank reads its share of
    the corpus and the statistics are all-reduced, so every rank returns the vectors of one
    pass (:mod:`emolens.extract.distributed`). Progress lines go to the ``emolens.extract.run``
    logger (INFO). ``head_layers`` get a shrinkage-LDA read-out head (``"auto"``: every layer
    of a small model, the middle ones of a large one; None: no head).

    >>> from emolens.corpus import Corpus, Record
    >>> recs = [Record(id=f"story/{e}/{k}", kind="story", emotion=e, text=f"{e} day {k}. " * 4,
    ...                split="heldout" if k == 2 else "train")
    ...         for e in ("calm", "sad", "happy") for k in range(3)]
    >>> recs.append(Record(id="neutral/0", kind="neutral", text="", turns=[
    ...     {"role": "user", "content": "Two plus two?"}, {"role": "assistant", "content": "4."}]))
    >>> v = extract(lm, Corpus(recs, "toy"), token_skip=1)
    >>> v.emotions, v.layers, v.meta["n_heldout"], v.default_layer in v.layers
    (('calm', 'happy', 'sad'), (0, 1, 2, 3), 3, True)
    """

    ctx = dist.context(group) if distributed is not False else None
    if distributed and ctx is None:
        raise CorpusError("distributed=True, but no torch.distributed process group of more "
                          "than one rank is initialised (see emolens.extract.distributed)")
    work = compute_model(lm, dtype)
    layer_ids = lm.resolve_layers(layers)
    show = progress and (ctx is None or ctx.rank == 0)
    if ctx is None:
        run = collect(work, corpus, layer_ids, token_skip=token_skip, batch_size=batch_size,
                      progress=show, dtype=None, head_layers=head_layers)
    else:
        run = dist.collect_distributed(work, corpus, layer_ids, token_skip=token_skip,
                                       batch_size=batch_size, progress=show, dtype=None,
                                       group=group, head_layers=head_layers)
    p = run.story_pass
    logger.info("stories: %d texts, %d tokens in %.1fs (%.0f tok/s, %s); %d shorter than "
                "4x%d tokens skipped a quarter", p.texts, p.tokens, p.seconds,
                p.tokens_per_second, str(work.dtype).replace("torch.", ""), p.adapted,
                token_skip)
    vecs = vectors_from(run, variance=variance)
    heldout = corpus.stories(split="heldout", emotions=list(vecs.emotions))
    if sweep and heldout:
        from emolens.concepts import load_norms

        mine = heldout if ctx is None else shard_of(heldout, (ctx.rank, ctx.world_size))
        counts = sweep_counts(work, vecs, mine, token_skip=token_skip, batch_size=batch_size,
                              progress=show)
        if ctx is not None:
            counts = dist.all_reduce_counts(counts, work.device, group=group)
        result = _sweep_result(vecs, counts, load_norms().valence)
        vecs = vecs.with_meta(recommended_layer=result["recommended_layer"],
                              layer_scores=result["per_layer"],
                              n_heldout=result["n_heldout"])
        best = result["per_layer"][str(result["recommended_layer"])]
        logger.info("layer sweep: layer %d best, held-out top-1 %.3f, top-5 %.3f (n=%d)",
                    result["recommended_layer"], best["top1"], best["top5"],
                    result["n_heldout"])
    return vecs.with_meta(story_tokens_per_second=round(p.tokens_per_second, 1),
                          extraction_dtype=str(work.dtype).replace("torch.", ""),
                          **corpus.provenance())  # corpus, corpus_variant, corpus_registers
