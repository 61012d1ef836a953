"""Held-out classification (paper-spec 5.1): do the vectors recognise stories they were not
built from?

Each held-out story is read with the pooled read-out of :func:`~emolens.experiments.common.
read_scores` (mean from the file's token skip, training centre subtracted, cosine with
every unit vector) and classified by its highest score: 171-way top-1 and top-5, and 12-way
among the core emotions with a confusion matrix.

>>> r = classification_result(np.eye(3), ["a", "b", "c"], ["a", "b", "c"], core=["a", "b"])
>>> r.top1.hits, r.core_accuracy.hits, r.confusion.tolist()
(3, 2, [[1, 0], [0, 1]])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens.concepts import CORE_EMOTIONS
from emolens.errors import CorpusError, EmolensError
from emolens.experiments.common import read_scores, resolve_layer, token_skip
from emolens.experiments.registry import Analysis, Context, Option, Result, register
from emolens.stats import Rate, confusion_matrix, format_rate, rate, topk_accuracy

if TYPE_CHECKING:  # pragma: no cover
    from emolens.corpus import Corpus
    from emolens.lens import LanguageModel
    from emolens.vectors import EmotionVectors

__all__ = ["HeldoutResult", "classification_result", "heldout_classification"]


@dataclass(frozen=True, eq=False)
class HeldoutResult(Result):
    """Held-out story classification at one layer.

    ``top1``/``top5``: 171-way (all emotions of the file); ``core_accuracy``: 12-way, scores
    among the core emotions only, on the core emotions' stories; ``confusion``: rows = true
    core emotion, columns = predicted.
    """

    kind = "heldout"

    layer: int
    token_skip: int
    n_emotions: int
    top1: Rate
    top5: Rate
    chance_top1: float
    chance_top5: float
    core_emotions: tuple[str, ...]
    core_accuracy: Rate | None
    core_chance: float
    confusion: np.ndarray
    per_emotion_core: dict[str, Rate]
    per_emotion_top1: dict[str, Rate]
    analysis: str = "heldout"

    def summary(self) -> str:
        """A readable table."""
        lines = [f"Held-out classification (layer {self.layer}, token skip {self.token_skip}, "
                 f"{self.n_emotions} emotions)",
                 f"  {self.n_emotions}-way top-1  {format_rate(self.top1)}  "
                 f"chance {self.chance_top1:.3f}",
                 f"  {self.n_emotions}-way top-5  {format_rate(self.top5)}  "
                 f"chance {self.chance_top5:.3f}"]
        if self.core_accuracy is not None:
            lines.append(f"  {len(self.core_emotions)}-way (core)  "
                         f"{format_rate(self.core_accuracy)}  chance {self.core_chance:.3f}")
            for e, r in self.per_emotion_core.items():
                lines.append(f"    {e:<12} {r.hits}/{r.n}")
        return "\n".join(lines)


def classification_result(scores: np.ndarray, truth: Sequence[str], emotions: Sequence[str],
                          core: Sequence[str] = CORE_EMOTIONS, *, layer: int = -1,
                          token_skip: int = 0) -> HeldoutResult:
    """The numbers of :func:`heldout_classification` from a score matrix (pure maths).

    ``scores[i, j]`` is story ``i``'s score for ``emotions[j]``; ``truth[i]`` its label.
    """
    S = np.asarray(scores, dtype=np.float64)
    names = list(emotions)
    index = {e: i for i, e in enumerate(names)}
    if S.shape != (len(truth), len(names)):
        raise EmolensError(f"scores have shape {S.shape}, expected ({len(truth)}, {len(names)})")
    t = np.array([index[x] for x in truth], dtype=np.int64)
    k5 = min(5, len(names))
    top1, top5 = topk_accuracy(S, t, 1), topk_accuracy(S, t, k5)
    per_top1 = {}
    for e in names:
        rows = t == index[e]
        if rows.any():
            per_top1[e] = topk_accuracy(S[rows], t[rows], 1)
    core_names = tuple(e for e in core if e in index)
    core_acc, per_core = None, {}
    cm = np.zeros((len(core_names), len(core_names)), dtype=np.int64)
    core_rows = np.array([x in core_names for x in truth], dtype=bool)
    if len(core_names) >= 2 and core_rows.any():
        cols = [index[e] for e in core_names]
        cidx = {e: i for i, e in enumerate(core_names)}
        sub = S[np.ix_(core_rows, cols)]
        ct = np.array([cidx[x] for x, keep in zip(truth, core_rows, strict=True) if keep])
        cm = confusion_matrix(ct, sub.argmax(axis=1), len(core_names))
        core_acc = rate(int(np.trace(cm)), int(cm.sum()))
        per_core = {e: rate(int(cm[i, i]), int(cm[i].sum()))
                    for i, e in enumerate(core_names) if cm[i].sum()}
    return HeldoutResult(
        layer=int(layer), token_skip=int(token_skip), n_emotions=len(names), top1=top1,
        top5=top5, chance_top1=1 / len(names), chance_top5=k5 / len(names),
        core_emotions=core_names, core_accuracy=core_acc,
        core_chance=1 / len(core_names) if core_names else math.nan, confusion=cm,
        per_emotion_core=per_core, per_emotion_top1=per_top1)


def heldout_classification(lm: LanguageModel, vectors: EmotionVectors, corpus: Corpus,
                           layer: Any = None, batch_size: int = 16,
                           mode: str = "auto", cache: dict[Any, Any] | None = None
                           ) -> HeldoutResult:
    """Classify the corpus's held-out stories by their pooled read-out at ``layer``
    (read-out ``mode``: ``auto`` = centred directions, ``lda`` = the file's head; ``cache``:
    see :func:`~emolens.experiments.common.read_scores`).

    >>> from emolens.corpus import Corpus, Record
    >>> stories = Corpus([Record(id=f"s{i}", kind="story", emotion=e, split="heldout",
    ...                          text=f"A story about feeling {e}.")
    ...                   for i, e in enumerate(vecs.emotions)])
    >>> r = heldout_classification(lm, vecs, stories)
    >>> r.top1.n, r.n_emotions, r.core_emotions
    (6, 6, ('happy', 'calm', 'desperate', 'angry', 'sad', 'afraid'))
    """
    layer = resolve_layer(lm, vectors, layer)
    stories = corpus.stories(split="heldout", emotions=list(vectors.emotions))
    if not stories:
        raise CorpusError(f"corpus {corpus.source!r} has no clean held-out stories for the "
                          "emotions of this vector file")
    scores = np.stack(read_scores(lm, vectors, [r.text for r in stories], layer,
                                  batch_size=batch_size, mode=mode, cache=cache))
    return classification_result(scores, [r.emotion for r in stories], vectors.emotions,
                                 layer=layer, token_skip=token_skip(vectors))


def _run(ctx: Context, mode: str) -> HeldoutResult:
    return heldout_classification(ctx.model(), ctx.vectors, ctx.need_corpus(), layer=ctx.layer,
                                  batch_size=ctx.batch_size, mode=mode, cache=ctx.cache)


ANALYSIS = register(Analysis(
    name="heldout", title="Held-out classification", section="5.1",
    description="Held-out stories (topics never used to build the vectors) classified by "
                "their pooled read-out: top-1 and top-5 among every emotion, 12-way among "
                "the core emotions.",
    study="The study shows vectors activating on fitting text; it reports no accuracy.",
    run=_run, needs_corpus=True,
    options=(Option("mode", "auto", "read-out mode (auto, cosine, centered, projection, or "
                                    "lda: the file's read-out head)"),)))
