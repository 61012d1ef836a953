"""Out-of-style classification (issue 10): do the vectors recognise text nobody here wrote?

The held-out analysis scores stories from the project's own corpus: other topics, but the
same style, register and length as the stories the vectors were built from, so it overstates
how well the read-out generalises. This analysis reads the out-of-style evaluation set
(:func:`emolens.concepts.evalset.load_outofstyle`: 400 texts, 10 for each of 40 emotions, in
seven registers and three length classes, written apart from the training corpus) with the
one read path (:func:`~emolens.experiments.common.read_scores`), at the layer the vector file
recommends (chosen on a split of the training corpus, never on this set), and classifies each
text by its highest score:

* 171-way top-1, top-3 and top-5 among every emotion of the vector file;
* 12-way top-1 among the :data:`~emolens.concepts.CORE_EMOTIONS` the file has;
* 8-way top-1 among :data:`EIGHT_WAY_EMOTIONS` (those the file has);
* 171-way top-3 per register and per length class, so the report can say where it fails.

The same figures are computed on the corpus's held-out split with the same read-out (mode,
layer, token skip), so the report shows in-style and out-of-style side by side: on every
held-out text (the held-out analysis' set; in the default corpus the 60-100-word stories and
the register texts), and on the stories alone when the split holds other registers too. The
maths is :func:`~emolens.experiments.heldout.classification_result`'s, shared with the
held-out analysis: with the same mode the in-style figures are the held-out analysis' own.

>>> r = accuracy(np.eye(3), ["a", "b", "c"], ["a", "b", "c"])
>>> r.top1.hits, r.top3.hits, r.n_texts
(3, 3, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens.concepts import CORE_EMOTIONS
from emolens.concepts.evalset import LENGTHS, REGISTERS, EvalText, load_outofstyle
from emolens.errors import CorpusError, EmolensError
from emolens.experiments.common import read_scores, resolve_layer, token_skip
from emolens.experiments.heldout import classification_result
from emolens.experiments.registry import Analysis, Context, Option, Result, register
from emolens.readout import resolve_pooled_mode
from emolens.stats import Rate, format_rate, rate, topk_accuracy

if TYPE_CHECKING:  # pragma: no cover
    from emolens.corpus import Corpus
    from emolens.lens import LanguageModel
    from emolens.vectors import EmotionVectors

__all__ = ["EIGHT_WAY_EMOTIONS", "SIDE_BY_SIDE_NOTE", "Accuracy", "OutOfStyleResult",
           "accuracy", "dominance", "group_rates", "outofstyle_classification"]

#: The eight core emotions of issue 10's 8-way check (its first measurement: 48 short
#: stories written outside the project, 8 core emotions): positive and negative, calm and
#: aroused. The other four core emotions (inspired, guilty, nervous, surprised) count in the
#: 12-way figure. A vector file that lacks some of the eight is scored among those it has
#: (the result names them, and the chance level follows).
EIGHT_WAY_EMOTIONS: tuple[str, ...] = (
    "happy", "loving", "proud", "calm", "desperate", "angry", "sad", "afraid",
)

#: Which statement the report makes about the two columns.
SIDE_BY_SIDE_NOTE = (
    "In-style: the held-out split of the project's own corpus (topics never used to build "
    "the vectors, written the same way as the training texts). Out-of-style: texts written "
    "apart from the training corpus, in other registers, lengths and situations. The layer "
    "and read-out settings were chosen on a split of the training corpus only; the "
    "out-of-style set is read only to report.")


@dataclass(frozen=True, eq=False)
class Accuracy:
    """Classification figures of one set of labelled texts (every rate with n and a Wilson
    interval).

    ``top1``/``top3``/``top5``: among all ``n_emotions`` emotions of the vector file;
    ``core``: top-1 among ``core_emotions`` (the core emotions the file has), on the texts
    labelled with one of them; ``eight``: the same among ``eight_emotions``. ``core`` and
    ``eight`` are None when fewer than two of their emotions are there or no text is
    labelled with one.
    """

    n_texts: int
    n_emotions: int
    top1: Rate
    top3: Rate
    top5: Rate
    chance_top1: float
    chance_top3: float
    chance_top5: float
    core_emotions: tuple[str, ...]
    core: Rate | None
    eight_emotions: tuple[str, ...]
    eight: Rate | None


def accuracy(scores: Any, truth: Sequence[str], emotions: Sequence[str],
             core: Sequence[str] = CORE_EMOTIONS,
             eight: Sequence[str] = EIGHT_WAY_EMOTIONS) -> Accuracy:
    """The figures of :class:`Accuracy` from a score matrix (pure maths).

    ``scores[i, j]`` is text ``i``'s score for ``emotions[j]``; ``truth[i]`` its label (one
    of ``emotions``). The 12-way and 8-way figures keep the columns of ``core`` / ``eight``
    that are among ``emotions`` and the rows labelled with one of those.

    >>> S = [[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.1, 0.7, 0.2]]
    >>> a = accuracy(S, ["x", "y", "z"], ["x", "y", "z"], core=["x", "y"], eight=["y", "z"])
    >>> a.top1.hits, a.top3.hits, a.core.hits, a.core.n, a.eight.hits, a.eight.n
    (1, 3, 2, 2, 0, 2)
    """
    S = np.asarray(scores, dtype=np.float64)
    names = list(emotions)
    if S.ndim != 2 or S.shape != (len(truth), len(names)):
        raise EmolensError(f"scores have shape {S.shape}, expected ({len(truth)}, {len(names)})")
    unknown = sorted({x for x in truth} - set(names))
    if unknown:
        raise EmolensError(f"labels {unknown} are not among the emotions scored")
    base = classification_result(S, truth, names, core)
    sub = classification_result(S, truth, names, eight)
    index = {e: i for i, e in enumerate(names)}
    k3 = min(3, len(names))
    top3 = topk_accuracy(S, np.array([index[x] for x in truth], dtype=np.int64), k3)
    return Accuracy(
        n_texts=len(truth), n_emotions=len(names), top1=base.top1, top3=top3, top5=base.top5,
        chance_top1=base.chance_top1, chance_top3=k3 / len(names),
        chance_top5=base.chance_top5, core_emotions=base.core_emotions,
        core=base.core_accuracy, eight_emotions=sub.core_emotions, eight=sub.core_accuracy)


def group_rates(scores: Any, truth: Sequence[str], emotions: Sequence[str],
                groups: Sequence[str], order: Sequence[str] = (), k: int = 3
                ) -> dict[str, Rate]:
    """Top-``k`` accuracy (among all ``emotions``) of the texts of each group.

    ``groups[i]`` is text ``i``'s group (a register, a length class); the dict follows
    ``order`` (groups not in it come after, sorted), with empty groups left out.

    >>> S = np.eye(3)
    >>> g = group_rates(S, ["a", "b", "c"], ["a", "b", "c"], ["x", "y", "x"], k=1)
    >>> {name: (r.hits, r.n) for name, r in g.items()}
    {'x': (2, 2), 'y': (1, 1)}
    """
    S = np.asarray(scores, dtype=np.float64)
    index = {e: i for i, e in enumerate(emotions)}
    t = np.array([index[x] for x in truth], dtype=np.int64)
    g = np.asarray(list(groups), dtype=object)
    if g.shape != (S.shape[0],):
        raise EmolensError(f"{g.size} group labels for {S.shape[0]} texts")
    present = set(g.tolist())
    names = [x for x in order if x in present] + sorted(present - set(order))
    kk = min(k, S.shape[1])
    return {name: topk_accuracy(S[g == name], t[g == name], kk) for name in names}


def dominance(M: Any) -> tuple[int, Rate]:
    """The column that wins most rows (argmax per row) and the share of rows it wins.

    A read-out dominated by one direction ranks that emotion first on most texts whatever
    they say (the scenario check reports it too): "proud ranks first for 10 of 12
    scenarios" is ``(proud's column, 10/12)``. A tie between columns goes to the first.

    >>> col, share = dominance([[0.9, 0.1], [0.8, 0.3], [0.2, 0.4]])
    >>> col, share.hits, share.n
    (0, 2, 3)
    """
    A = np.asarray(M, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] == 0 or A.shape[1] == 0:
        raise EmolensError(f"dominance needs a non-empty 2-d score matrix, got {A.shape}")
    counts = np.bincount(A.argmax(axis=1), minlength=A.shape[1])
    top = int(counts.argmax())
    return top, rate(int(counts[top]), int(A.shape[0]))


@dataclass(frozen=True, eq=False)
class OutOfStyleResult(Result):
    """Out-of-style classification beside in-style held-out, one read-out, one layer.

    ``mode`` is the read-out mode asked for, ``mode_used`` what it resolved to (``auto``
    becomes ``centered`` for a file that stores its training centre). ``out_of_style``: the
    evaluation set; ``in_style``: every held-out text of the corpus (None without a
    corpus), ``in_style_stories`` its 60-100-word stories alone (None when the split holds
    nothing else, or no story), ``in_style_by_register`` top-3 per corpus register;
    ``by_register``/``by_length``: out-of-style top-3 among all emotions per group;
    ``per_emotion_top3`` the same per labelled emotion. ``most_predicted`` is the emotion
    ranked first most often on the out-of-style texts and ``most_predicted_share`` how
    often (one direction that wins everywhere shows here). ``skipped_emotions``: labels
    of the evaluation set that the vector file lacks (their texts are not scored).
    """

    kind = "outofstyle"

    layer: int
    token_skip: int
    mode: str
    mode_used: str
    out_of_style: Accuracy
    in_style: Accuracy | None
    in_style_stories: Accuracy | None
    in_style_by_register: dict[str, Rate]
    by_register: dict[str, Rate]
    by_length: dict[str, Rate]
    per_emotion_top3: dict[str, Rate]
    most_predicted: str
    most_predicted_share: Rate
    skipped_emotions: tuple[str, ...]
    note: str = SIDE_BY_SIDE_NOTE
    analysis: str = "outofstyle"

    def columns(self) -> list[tuple[str, Accuracy]]:
        """The blocks the side-by-side table shows, with their headings."""
        cols = []
        if self.in_style is not None:
            cols.append((f"in-style held-out ({self.in_style.n_texts} texts)", self.in_style))
        if self.in_style_stories is not None:
            cols.append((f"in-style, stories only ({self.in_style_stories.n_texts})",
                         self.in_style_stories))
        cols.append((f"out-of-style ({self.out_of_style.n_texts} texts)", self.out_of_style))
        return cols

    def summary(self) -> str:
        """A readable table: in-style and out-of-style side by side, then where it fails."""
        def cell(r: Rate | None) -> str:
            return format_rate(r) if r is not None else "n/a"

        o = self.out_of_style
        cols = self.columns()
        lines = [f"In-style vs out-of-style classification (layer {self.layer}, read-out "
                 f"{self.mode_used}, token skip {self.token_skip})",
                 f"  {'':<22}" + "".join(f"{h[:33]:<34}" for h, _ in cols) + "chance"]
        for label, key, chance in _ROWS:
            name = label.format(n=o.n_emotions, core=len(o.core_emotions),
                                eight=len(o.eight_emotions))
            cells = "".join(f"{cell(getattr(a, key)):<34}" for _, a in cols)
            lines.append(f"  {name:<22}{cells}{_chance(o, chance):.3f}")
        lines.append("  out-of-style top-3 by register: " + ", ".join(
            f"{g} {r.hits}/{r.n}" for g, r in self.by_register.items()))
        lines.append("  out-of-style top-3 by length: " + ", ".join(
            f"{g} {r.hits}/{r.n}" for g, r in self.by_length.items()))
        if self.in_style_by_register:
            lines.append("  in-style top-3 by register: " + ", ".join(
                f"{g} {r.hits}/{r.n}" for g, r in self.in_style_by_register.items()))
        s = self.most_predicted_share
        lines.append(f"  most often ranked first out-of-style: {self.most_predicted} "
                     f"({s.hits}/{s.n} texts)")
        if self.skipped_emotions:
            lines.append(f"  not scored (the vector file lacks them): "
                         f"{', '.join(self.skipped_emotions)}")
        lines.append(f"  {self.note}")
        return "\n".join(lines)


#: The table's rows: (label, Accuracy field, chance field or the emotions it is among).
_ROWS = (("{n}-way top-1", "top1", "chance_top1"), ("{n}-way top-3", "top3", "chance_top3"),
         ("{n}-way top-5", "top5", "chance_top5"), ("{core}-way (core)", "core", "core_emotions"),
         ("{eight}-way (8 core)", "eight", "eight_emotions"))


def _chance(a: Accuracy, field: str) -> float:
    v = getattr(a, field)
    if isinstance(v, tuple):
        return 1 / len(v) if v else float("nan")
    return float(v)


def _read(lm: LanguageModel, vectors: EmotionVectors, texts: Sequence[str], layer: int,
          mode: str, batch_size: int, cache: dict[Any, Any] | None) -> np.ndarray:
    return np.stack(read_scores(lm, vectors, list(texts), layer, batch_size=batch_size,
                                mode=mode, cache=cache))


def outofstyle_classification(lm: LanguageModel, vectors: EmotionVectors,
                              corpus: Corpus | None = None, layer: Any = None,
                              mode: str = "auto", batch_size: int = 16,
                              texts: Sequence[EvalText] | None = None,
                              cache: dict[Any, Any] | None = None) -> OutOfStyleResult:
    """Classify the out-of-style texts (default: the shipped set) and, when ``corpus`` is
    given, the corpus's held-out stories, with the pooled read-out ``mode`` at ``layer``
    (``cache``: see :func:`~emolens.experiments.common.read_scores`; a report shares the
    held-out stories' read-out with :mod:`~emolens.experiments.heldout` through it).

    >>> r = outofstyle_classification(lm, vecs)
    >>> r.out_of_style.n_texts, r.out_of_style.eight_emotions, r.in_style is None
    (60, ('happy', 'calm', 'desperate', 'angry', 'sad', 'afraid'), True)
    """
    layer = resolve_layer(lm, vectors, layer)
    used = resolve_pooled_mode(vectors, mode)
    texts = load_outofstyle() if texts is None else list(texts)
    keep = [t for t in texts if t.emotion in vectors]
    skipped = tuple(sorted({t.emotion for t in texts} - {t.emotion for t in keep}))
    if not keep:
        raise CorpusError("no out-of-style text is labelled with an emotion of this vector "
                          "file")
    names = list(vectors.emotions)
    truth = [t.emotion for t in keep]
    S = _read(lm, vectors, [t.text for t in keep], layer, mode, batch_size, cache)
    in_style = in_stories = None
    in_by_register: dict[str, Rate] = {}
    if corpus is not None:
        held = corpus.stories(split="heldout", emotions=names)
        if held:
            H = _read(lm, vectors, [r.text for r in held], layer, mode, batch_size, cache)
            labels = [r.emotion for r in held]
            in_style = accuracy(H, labels, names)
            registers = [getattr(r, "register", None) or "story" for r in held]
            in_by_register = group_rates(H, labels, names, registers, ("story",))
            rows = [i for i, g in enumerate(registers) if g == "story"]
            if rows and len(rows) < len(held):
                in_stories = accuracy(H[rows], [labels[i] for i in rows], names)
    top, share = dominance(S)
    return OutOfStyleResult(
        layer=layer, token_skip=token_skip(vectors), mode=str(mode), mode_used=used,
        out_of_style=accuracy(S, truth, names), in_style=in_style,
        in_style_stories=in_stories, in_style_by_register=in_by_register,
        by_register=group_rates(S, truth, names, [t.register for t in keep], REGISTERS),
        by_length=group_rates(S, truth, names, [t.length for t in keep], LENGTHS),
        per_emotion_top3=group_rates(S, truth, names, truth, names),
        most_predicted=names[top], most_predicted_share=share, skipped_emotions=skipped)


def _run(ctx: Context, mode: str) -> OutOfStyleResult:
    return outofstyle_classification(ctx.model(), ctx.vectors, ctx.corpus, layer=ctx.layer,
                                     mode=mode, batch_size=ctx.batch_size, cache=ctx.cache)


ANALYSIS = register(Analysis(
    name="outofstyle", title="Out-of-style classification", section="5.1",
    description="Texts written apart from the training corpus (other registers and lengths, "
                "never used to build the vectors or choose a setting) classified by their "
                "pooled read-out, beside the in-style held-out stories read the same way: "
                "top-1/top-3/top-5 among every emotion, 12-way among the core emotions, "
                "8-way among eight of them, and top-3 per register and length.",
    study="The study shows vectors activating on fitting text; it reports no accuracy.",
    run=_run, needs_corpus=True, aliases=("out-of-style",),
    options=(Option("mode", "auto", "read-out mode passed to the read path (auto, cosine, "
                                    "centered, projection, or a head the file stores)"),)))
