"""Does a model have emotion representations? The study's validation checks, on any model
(paper-spec section 5).

Each analysis is one function that returns a small frozen dataclass: numbers with their n
and uncertainty, ``.to_dict()`` (JSON-ready), ``.summary()`` (a readable table) and
``.figure()`` (a matplotlib figure from :mod:`emolens.report.figures`).

* :func:`heldout_classification` - held-out stories, 171-way top-1/top-5 and 12-way;
* :func:`logit_lens` - the tokens each vector promotes and suppresses through the unembedding;
* :func:`implicit_scenarios` - 12 probes x 12 scenarios at ``assistant_start``;
* :func:`intensity_sweeps` - Spearman sign checks on 6 numeric templates x 4 emotions;
* :func:`steering_validation` - change in the log-probability of the 12 emotion words.

Every probe score goes through :func:`emolens.monitor.readout` (one read-out path for the
whole project). Model work is batched: one early-exited forward per batch of prompts. The
pure maths (z-scoring, diagonal statistics, sign tallies, word matching) are separate
functions, testable without a model.

>>> M = np.array([[0.3, 0.1], [0.2, 0.4], [0.5, 0.0]])
>>> s = diagonal_stats(M, [0, 1, 0])
>>> s["raw_accuracy"].hits, s["z_accuracy"].hits
(3, 3)
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy import stats as _st

from emolens.concepts import (
    CORE_EMOTIONS,
    FEEL_PROMPTS,
    IMPLICIT_SCENARIOS,
    INTENSITY_EMOTIONS,
    INTENSITY_TEMPLATES,
    emotion_word_forms,
)
from emolens.errors import CorpusError, EmolensError, VectorFileError
from emolens.monitor import readout
from emolens.stats import (
    Correlation,
    Rate,
    confusion_matrix,
    format_rate,
    rank_of_true,
    rate,
    spearman,
    topk_accuracy,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from emolens.concepts import FeelPrompt, IntensityTemplate, Scenario
    from emolens.corpus import Corpus
    from emolens.lens import LanguageModel
    from emolens.model import ChatEncoding
    from emolens.vectors import EmotionVectors

__all__ = [
    "ANALYSES",
    "FeelMatrix",
    "HeldoutResult",
    "IntensityResult",
    "LensRow",
    "LogitLensResult",
    "ScenarioResult",
    "SteeringResult",
    "TemplateSweep",
    "assistant_turn_range",
    "binomial_p",
    "classification_result",
    "diagonal_stats",
    "feel_matrix_stats",
    "final_norm_gain",
    "heldout_classification",
    "implicit_scenarios",
    "intensity_sweeps",
    "jsonable",
    "logit_lens",
    "names_emotion",
    "read_positions",
    "resolve_layer",
    "sign_tally",
    "steering_validation",
    "word_token_ids",
    "zscore_columns",
]

#: The names the CLI and the report use for the analyses of this module and speakers.py.
ANALYSES = ("heldout", "logit-lens", "scenarios", "intensity", "steering", "speakers")


# --------------------------------------------------------------------------------------------
# JSON and small helpers
# --------------------------------------------------------------------------------------------


def jsonable(obj: Any) -> Any:
    """Plain JSON types from results: NamedTuples and dataclasses become dicts, arrays lists,
    NaN/inf become None.

    >>> jsonable({"r": rate(1, 2), "x": np.array([1.0, np.nan])})["x"]
    [1.0, None]
    """
    if isinstance(obj, tuple) and hasattr(obj, "_asdict"):
        return {k: jsonable(v) for k, v in obj._asdict().items()}
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


class _Result:
    """Shared behaviour of the result dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy of every field (NaN becomes null)."""
        out = jsonable(self)
        out["analysis"] = self.analysis  # type: ignore[attr-defined]
        return out


def binomial_p(hits: int, n: int, chance: float) -> float:
    """One-sided binomial p-value of ``hits`` or more out of ``n`` at success rate ``chance``.

    >>> round(binomial_p(20, 24, 0.5), 5)
    0.00077
    """
    if n == 0:
        return math.nan
    return float(_st.binomtest(int(hits), int(n), float(chance), alternative="greater").pvalue)


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def _require(vectors: EmotionVectors, names: Sequence[str], what: str) -> list[str]:
    missing = [e for e in names if e not in vectors]
    if missing:
        raise VectorFileError(f"{what} needs the emotion(s) {', '.join(missing)}, which this "
                              "vector file lacks")
    return list(names)


# --------------------------------------------------------------------------------------------
# model plumbing shared by the analyses
# --------------------------------------------------------------------------------------------


def resolve_layer(lm: LanguageModel, vectors: EmotionVectors, layer: Any = None) -> int:
    """The layer to read: ``layer`` (int, fraction, ``"0.66"``) or the file's default layer.

    Raises LayerError when the file has no vectors there, VectorFileError when the vectors
    were built for a model of another width.
    """
    if vectors.d != lm.hidden_size:
        raise VectorFileError(f"the vectors have width {vectors.d} but {lm.name} has hidden "
                              f"size {lm.hidden_size}: they were built for another model")
    i = vectors.default_layer if layer is None else lm.resolve_layer(layer)
    lm.resolve_layer(i)  # in range for this model
    vectors.matrix(i)  # LayerError naming the stored layers
    return i


def _pad_right(lm: LanguageModel, rows: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, :len(r)] = 1
    return {"input_ids": ids.to(lm.device), "attention_mask": mask.to(lm.device)}


def _directions(vectors: EmotionVectors, layer: int, names: Sequence[str],
                device: torch.device | str) -> torch.Tensor:
    idx = [vectors.index(e) for e in names]
    mat = np.ascontiguousarray(vectors.matrix(layer)[idx], dtype=np.float32)
    return torch.from_numpy(mat).to(device)


def read_positions(lm: LanguageModel, vectors: EmotionVectors, id_rows: Sequence[Sequence[int]],
                   positions: Sequence[Sequence[int]], layer: int,
                   emotions: Sequence[str] | None = None, *, batch_size: int = 16,
                   mode: str = "cosine") -> list[np.ndarray]:
    """Read-out ``[len(positions[i]), E]`` at chosen token positions of each token-id row.

    One forward per ``batch_size`` rows (right padding, masked), stopped after ``layer``;
    scores from :func:`emolens.monitor.readout`.

    >>> enc = lm.encode_chat([{"role": "user", "content": "Hi"}])  # doctest: +SKIP
    >>> read_positions(lm, vecs, [enc.input_ids], [[enc.assistant_start]], 20)[0].shape
    ... # doctest: +SKIP
    (1, 171)
    """
    if len(id_rows) != len(positions):
        raise EmolensError(f"{len(id_rows)} token rows but {len(positions)} position lists")
    names = list(emotions) if emotions is not None else list(vectors.emotions)
    dirs = _directions(vectors, layer, names, lm.device)
    out: list[np.ndarray] = []
    step = max(1, int(batch_size))
    for lo in range(0, len(id_rows), step):
        rows = id_rows[lo:lo + step]
        for r, pos in zip(rows, positions[lo:lo + step], strict=True):
            if not r:
                raise EmolensError("cannot read an empty token row")
            bad = [p for p in pos if not 0 <= p < len(r)]
            if bad:
                raise EmolensError(f"positions {bad} are outside a row of {len(r)} tokens")
        hidden = lm.residuals(_pad_right(lm, rows), [layer])[layer]
        for r, pos in enumerate(positions[lo:lo + step]):
            h = hidden[r, torch.as_tensor(list(pos), dtype=torch.long, device=hidden.device)]
            out.append(readout(h, dirs, mode).cpu().numpy().astype(np.float64))
    return out


def _user_chat(message: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": message}]


def _read_at_assistant_start(lm: LanguageModel, vectors: EmotionVectors,
                             messages: Sequence[str], layer: int, emotions: Sequence[str],
                             batch_size: int) -> np.ndarray:
    """[len(messages), E] read-out at ``assistant_start`` of one user turn per message."""
    encs = [lm.encode_chat(_user_chat(m), add_generation_prompt=True) for m in messages]
    got = read_positions(lm, vectors, [e.input_ids for e in encs],
                         [[e.assistant_start] for e in encs], layer, emotions,
                         batch_size=batch_size)
    return np.stack([g[0] for g in got])


# --------------------------------------------------------------------------------------------
# 1. held-out classification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class HeldoutResult(_Result):
    """Held-out story classification at one layer.

    ``top1``/``top5``: 171-way (all emotions of the file); ``core_accuracy``: 12-way, scores
    among the core emotions only, on the core emotions' stories; ``confusion``: rows = true
    core emotion, columns = predicted.
    """

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

    def figure(self) -> Figure:
        """Confusion matrix of the core emotions."""
        from emolens.report.figures import fig_bar_ci, fig_confusion

        if self.core_accuracy is None:
            labels, rates = ["top-1", "top-5"], [self.top1, self.top5]
            return fig_bar_ci(labels, [r.value for r in rates], [r.ci_low for r in rates],
                              [r.ci_high for r in rates], "Held-out accuracy", "accuracy",
                              ns=[r.n for r in rates], chance=self.chance_top1)
        return fig_confusion(
            self.confusion, self.core_emotions,
            title=f"Held-out stories, {len(self.core_emotions)}-way among the core emotions, "
                  f"layer {self.layer}\n(n = {self.core_accuracy.n}, accuracy "
                  f"{self.core_accuracy.value:.2f}, chance {self.core_chance:.2f})")


def classification_result(scores: np.ndarray, truth: Sequence[str], emotions: Sequence[str],
                          core: Sequence[str] = CORE_EMOTIONS, *, layer: int = -1,
                          token_skip: int = 0) -> HeldoutResult:
    """The numbers of :func:`heldout_classification` from a score matrix (pure maths).

    ``scores[i, j]`` is story ``i``'s score for ``emotions[j]``; ``truth[i]`` its label.

    >>> r = classification_result(np.eye(3), ["a", "b", "c"], ["a", "b", "c"], core=["a", "b"])
    >>> r.top1.hits, r.core_accuracy.hits, r.confusion.tolist()
    (3, 2, [[1, 0], [0, 1]])
    """
    S = np.asarray(scores, dtype=np.float64)
    names = list(emotions)
    index = {e: i for i, e in enumerate(names)}
    if S.shape != (len(truth), len(names)):
        raise EmolensError(f"scores have shape {S.shape}, expected ({len(truth)}, {len(names)})")
    t = np.array([index[x] for x in truth], dtype=np.int64)
    top1, top5 = topk_accuracy(S, t, 1), topk_accuracy(S, t, min(5, len(names)))
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
        pred = sub.argmax(axis=1)
        cm = confusion_matrix(ct, pred, len(core_names))
        core_acc = rate(int(np.trace(cm)), int(cm.sum()))
        per_core = {e: rate(int(cm[i, i]), int(cm[i].sum()))
                    for i, e in enumerate(core_names) if cm[i].sum()}
    k5 = min(5, len(names))
    return HeldoutResult(
        layer=int(layer), token_skip=int(token_skip), n_emotions=len(names), top1=top1,
        top5=top5, chance_top1=1 / len(names), chance_top5=k5 / len(names),
        core_emotions=core_names, core_accuracy=core_acc,
        core_chance=1 / len(core_names) if core_names else math.nan, confusion=cm,
        per_emotion_core=per_core, per_emotion_top1=per_top1)


def heldout_classification(lm: LanguageModel, vectors: EmotionVectors, corpus: Corpus,
                           layer: Any = None, batch_size: int = 16) -> HeldoutResult:
    """Classify the corpus's held-out stories by cosine with each emotion vector.

    Each story is mean-pooled at ``layer`` from the file's ``token_skip`` on (as in
    extraction), the file's ``center`` (training mean over emotions) is subtracted, and the
    cosine with every unit vector is the score.

    >>> from emolens.corpus import load_corpus                          # doctest: +SKIP
    >>> r = heldout_classification(lm, vecs, load_corpus("default"))    # doctest: +SKIP
    >>> print(r.summary())                                              # doctest: +SKIP
    """
    from emolens.extract import DEFAULT_TOKEN_SKIP, pooled_features

    layer = resolve_layer(lm, vectors, layer)
    stories = corpus.stories(split="heldout", emotions=list(vectors.emotions))
    if not stories:
        raise CorpusError(f"corpus {corpus.source!r} has no clean held-out stories for the "
                          "emotions of this vector file")
    skip = int(vectors.meta.get("token_skip", DEFAULT_TOKEN_SKIP))
    feats, _, _ = pooled_features(lm, [r.text for r in stories], [layer], token_skip=skip,
                                  batch_size=batch_size, desc="held-out")
    x = torch.from_numpy(feats[:, 0].astype(np.float32))
    if vectors.center is not None:
        x = x - torch.from_numpy(np.array(vectors.center[vectors.layer_index(layer)]))
    dirs = _directions(vectors, layer, vectors.emotions, "cpu")
    scores = readout(x, dirs).numpy()
    return classification_result(scores, [r.emotion for r in stories], vectors.emotions,
                                 layer=layer, token_skip=skip)


# --------------------------------------------------------------------------------------------
# 2. logit lens
# --------------------------------------------------------------------------------------------


def final_norm_gain(lm: LanguageModel) -> torch.Tensor:
    """The final norm's elementwise scale ``g`` [d] (float32), measured, not guessed.

    The norm runs on a zero-mean probe ``x`` of +-1 entries and on ``-x``; the odd part
    ``(norm(x) - norm(-x)) / 2`` equals ``g * x / rms(x)`` for RMSNorm (``w`` or Gemma's
    ``1 + w``) and LayerNorm alike: LayerNorm's centring does nothing to a zero-mean probe
    and its bias cancels. So ``g = odd part * rms(x) / x``. Without a final norm ``g = 1``.
    """
    d = lm.hidden_size
    norm = lm.parts.final_norm
    if norm is None:
        return torch.ones(d)
    x = torch.ones(d, dtype=torch.float64)
    x[1::2] = -1.0
    x = x - x.mean()  # zero mean also for odd d (every entry stays non-zero)
    rms = float(x.pow(2).mean().sqrt())
    with torch.inference_mode():
        probe = torch.stack([x, -x])[:, None, :].to(lm.device, lm.dtype)
        out = norm(probe).double().cpu()[:, 0, :]
    return ((out[0] - out[1]) / 2 * rms / x).float()


def _unembedding(lm: LanguageModel) -> torch.Tensor:
    mod = lm.parts.unembed
    weight = getattr(mod, "weight", None) if mod is not None else None
    if weight is None:  # tied weights with no output module: the input embedding
        weight = lm.model.get_input_embeddings().weight
    return weight


def _tokens(tokens: Sequence[str]) -> str:
    return ", ".join(t.strip() or repr(t) for t in tokens)


def _letters(token: str) -> str:
    return re.sub(r"[^a-z]", "", token.lower())


def names_emotion(token: str, emotion: str, min_len: int = 4) -> bool:
    """Whether a vocabulary token spells (part of) a form of ``emotion``.

    A token matches when, lower-cased with non-letters dropped, it equals a word form, or
    has at least ``min_len`` letters and is a prefix of a form (``"desper"``) or starts
    with one (``"calmly"``). Short fragments (``"pro"``) do not count.

    >>> [names_emotion(t, e) for t, e in [(" desper", "desperate"), ("sad", "sad"),
    ...                                   (" pro", "proud"), ("Happiness", "happy")]]
    [True, True, False, True]
    """
    t = _letters(token)
    if not t:
        return False
    for form in emotion_word_forms(emotion):
        f = _letters(form)
        if t == f or (len(t) >= min_len and (f.startswith(t) or t.startswith(f))):
            return True
    return False


@dataclass(frozen=True, eq=False)
class LensRow:
    """One emotion's strongest promoted and suppressed tokens (ids, text, logit values)."""

    emotion: str
    top_tokens: tuple[str, ...]
    top_ids: tuple[int, ...]
    top_logits: tuple[float, ...]
    bottom_tokens: tuple[str, ...]
    bottom_ids: tuple[int, ...]
    bottom_logits: tuple[float, ...]
    names_itself: bool


@dataclass(frozen=True, eq=False)
class LogitLensResult(_Result):
    """Logit lens of each vector: ``unembed(g * v)`` with ``g`` the final norm's scale.

    ``self_match``: fraction of emotions whose top-k promoted tokens include a spelling of the
    emotion word (:func:`names_emotion`); ``chance_match``: the same rate expected for k
    tokens drawn at random from the vocabulary.
    """

    layer: int
    k: int
    rows: tuple[LensRow, ...]
    self_match: Rate
    chance_match: float
    norm: str
    analysis: str = "logit-lens"

    def summary(self) -> str:
        """A readable table."""
        lines = [f"Logit lens (layer {self.layer}, final norm: {self.norm}, top/bottom "
                 f"{self.k})"]
        for r in self.rows:
            mark = "*" if r.names_itself else " "
            lines.append(f" {mark}{r.emotion:<12} + {_tokens(r.top_tokens)}")
            lines.append(f"  {'':<12} - {_tokens(r.bottom_tokens)}")
        lines.append(f"  promotes its own word (*): {format_rate(self.self_match)}; "
                     f"expected by chance {self.chance_match:.3f}")
        return "\n".join(lines)

    def figure(self) -> Figure:
        """The table of promoted and suppressed tokens."""
        from emolens.report.figures import fig_logit_lens

        return fig_logit_lens(
            [(r.emotion, r.top_tokens, r.bottom_tokens) for r in self.rows],
            title=f"Logit lens at layer {self.layer}: tokens promoted and suppressed by "
                  f"{len(self.rows)} emotion vectors\n(own word among the top {self.k}: "
                  f"{self.self_match.hits}/{self.self_match.n})")


def logit_lens(lm: LanguageModel, vectors: EmotionVectors, layer: Any = None, k: int = 5,
               emotions: Sequence[str] = CORE_EMOTIONS) -> LogitLensResult:
    """Tokens each emotion vector promotes and suppresses directly through the unembedding.

    ``logits = W_U (g * v)`` where ``v`` is the unit vector and ``g`` the final norm's
    elementwise scale (:func:`final_norm_gain`). The norm's division by the root mean square
    is one positive number for a single vector and does not change the ranking, so it is not
    applied; the vector is never centred as if it were a token's activation. Output biases
    and logit soft-capping (monotone) are left out.

    >>> r = logit_lens(lm, vecs, k=5)  # doctest: +SKIP
    >>> r.rows[0].emotion, len(r.rows[0].top_tokens)  # doctest: +SKIP
    ('happy', 5)
    """
    if k < 1:
        raise EmolensError(f"k must be >= 1, got {k}")
    layer = resolve_layer(lm, vectors, layer)
    names = _require(vectors, list(emotions), "the logit lens")
    gain = final_norm_gain(lm)
    W = _unembedding(lm)
    n_vocab = min(int(W.shape[0]), len(lm.tokenizer))  # rows past the tokenizer are padding
    dirs = _directions(vectors, layer, names, "cpu") * gain[None, :]
    with torch.inference_mode():
        logits = (dirs.to(W.device, torch.float32) @ W[:n_vocab].float().T).cpu()
    k = min(k, n_vocab)
    top = logits.topk(k, dim=1)
    bot = (-logits).topk(k, dim=1)
    rows = []
    decode = lm.tokenizer.decode
    for i, e in enumerate(names):
        t_ids, b_ids = top.indices[i].tolist(), bot.indices[i].tolist()
        t_txt = tuple(decode([j]) for j in t_ids)
        rows.append(LensRow(e, t_txt, tuple(t_ids), tuple(top.values[i].tolist()),
                            tuple(decode([j]) for j in b_ids), tuple(b_ids),
                            tuple((-bot.values[i]).tolist()),
                            any(names_emotion(t, e) for t in t_txt)))
    hits = sum(r.names_itself for r in rows)
    norm = type(lm.parts.final_norm).__name__ if lm.parts.final_norm is not None else "none"
    return LogitLensResult(layer, k, tuple(rows), rate(hits, len(rows)),
                           _chance_match(lm, names, n_vocab, k), f"{norm} scale applied")


def _chance_match(lm: LanguageModel, names: Sequence[str], n_vocab: int, k: int) -> float:
    """Mean over emotions of P(at least one of k random vocabulary tokens names it)."""
    texts = lm.tokenizer.batch_decode([[i] for i in range(n_vocab)])
    letters = [_letters(t) for t in texts]
    probs = []
    for e in names:
        forms = [_letters(f) for f in emotion_word_forms(e)]
        m = sum(1 for t in letters if t and any(
            t == f or (len(t) >= 4 and (f.startswith(t) or t.startswith(f))) for f in forms))
        probs.append(1.0 - math.prod((n_vocab - m - i) / (n_vocab - i) for i in range(k))
                     if m < n_vocab else 1.0)
    return float(np.mean(probs)) if probs else math.nan


# --------------------------------------------------------------------------------------------
# 3. implicit scenarios
# --------------------------------------------------------------------------------------------


def zscore_columns(M: Any) -> np.ndarray:
    """Each column minus its mean, over its standard deviation (population); a constant
    column becomes 0.

    >>> zscore_columns([[1.0, 5.0], [3.0, 5.0]]).tolist()
    [[-1.0, 0.0], [1.0, 0.0]]
    """
    A = np.asarray(M, dtype=np.float64)
    sd = A.std(axis=0)
    return np.divide(A - A.mean(axis=0), sd, out=np.zeros_like(A), where=sd > 0)


def diagonal_stats(M: Any, targets: Sequence[int]) -> dict[str, Any]:
    """How often each row's target column wins, raw and after z-scoring each column.

    ``M[i, j]`` is probe ``j`` on item ``i``; ``targets[i]`` the probe item ``i`` should
    light up. Returns Rates (``raw_accuracy``, ``z_accuracy``), mean ranks (1 = best) and
    one-sided binomial p-values against chance ``1 / n_probes``.

    >>> s = diagonal_stats([[0.9, 0.5], [0.8, 0.6]], [0, 1])
    >>> s["raw_accuracy"].hits, s["z_accuracy"].hits, s["raw_mean_rank"]
    (1, 2, 1.5)
    """
    A = np.asarray(M, dtype=np.float64)
    t = np.asarray(targets, dtype=np.int64)
    Z = zscore_columns(A)
    chance = 1.0 / A.shape[1]
    out: dict[str, Any] = {"chance": chance}
    for tag, X in (("raw", A), ("z", Z)):
        hits = int((X.argmax(axis=1) == t).sum())
        out[f"{tag}_accuracy"] = rate(hits, len(t))
        out[f"{tag}_mean_rank"] = float(rank_of_true(X, t).mean())
        out[f"{tag}_p"] = binomial_p(hits, len(t), chance)
    return out


@dataclass(frozen=True, eq=False)
class ScenarioResult(_Result):
    """Probe x scenario read-outs at ``assistant_start``.

    ``scores[i, j]``: cosine of scenario ``i``'s activation with probe ``j``; ``zscores``
    the same with each probe z-scored across scenarios. The headline is the z-scored
    diagonal accuracy: like the study's figure it compares each probe with itself across
    scenarios, so a probe that is high everywhere (the study saw "loving") does not win
    every row. Raw numbers are reported beside it.
    """

    layer: int
    labels: tuple[str, ...]
    targets: tuple[str, ...]
    probes: tuple[str, ...]
    scores: np.ndarray
    zscores: np.ndarray
    accuracy: Rate
    mean_rank: float
    p_value: float
    raw_accuracy: Rate
    raw_mean_rank: float
    raw_p_value: float
    chance: float
    probe_means: dict[str, float]
    analysis: str = "scenarios"

    def summary(self) -> str:
        """A readable table."""
        lines = [f"Implicit scenarios at assistant_start (layer {self.layer}, "
                 f"{len(self.labels)} scenarios x {len(self.probes)} probes)",
                 f"  diagonal accuracy, z-scored per probe (headline)  "
                 f"{format_rate(self.accuracy)}  mean rank {self.mean_rank:.2f}  "
                 f"p {_fmt_p(self.p_value)}",
                 f"  diagonal accuracy, raw cosine                     "
                 f"{format_rate(self.raw_accuracy)}  mean rank {self.raw_mean_rank:.2f}  "
                 f"p {_fmt_p(self.raw_p_value)}",
                 f"  chance {self.chance:.3f}, mean rank by chance "
                 f"{(len(self.probes) + 1) / 2:.1f}"]
        for i, (lab, tgt) in enumerate(zip(self.labels, self.targets, strict=True)):
            win = self.probes[int(self.zscores[i].argmax())]
            raw = self.probes[int(self.scores[i].argmax())]
            lines.append(f"    {lab[:28]:<28} target {tgt:<10} top (z) {win:<10} top (raw) {raw}")
        return "\n".join(lines)

    def figure(self, zscored: bool = True) -> Figure:
        """The scenario x probe matrix (z-scored per probe unless ``zscored=False``)."""
        from emolens.report.figures import fig_probe_matrix

        M = self.zscores if zscored else self.scores
        acc = self.accuracy if zscored else self.raw_accuracy
        kind = "z-scored within each probe" if zscored else "raw cosine"
        rows = [f"{lab} ({tgt})" for lab, tgt in zip(self.labels, self.targets, strict=True)]
        return fig_probe_matrix(
            M, rows, self.probes,
            # one line: fig_probe_matrix draws a newline as a visible "\n"
            title=f"Implicit scenarios at assistant_start, layer {self.layer}, {kind}: "
                  f"target wins {acc.hits}/{acc.n} rows (chance {self.chance:.2f})",
            value_label="z-score within probe" if zscored else "cosine similarity",
            fmt=".1f" if zscored else ".2f")


def implicit_scenarios(lm: LanguageModel, vectors: EmotionVectors, layer: Any = None,
                       scenarios: Sequence[Scenario] = IMPLICIT_SCENARIOS,
                       probes: Sequence[str] = CORE_EMOTIONS,
                       batch_size: int = 16) -> ScenarioResult:
    """Read the core probes at ``assistant_start`` of each implicit-emotion scenario.

    >>> r = implicit_scenarios(lm, vecs)  # doctest: +SKIP
    >>> r.scores.shape  # doctest: +SKIP
    (12, 12)
    """
    layer = resolve_layer(lm, vectors, layer)
    probes = _require(vectors, list(probes), "the scenario check")
    pindex = {e: j for j, e in enumerate(probes)}
    unknown = [s.target for s in scenarios if s.target not in pindex]
    if unknown:
        raise EmolensError(f"scenario targets {unknown} are not among the probes")
    S = _read_at_assistant_start(lm, vectors, [s.message for s in scenarios], layer, probes,
                                 batch_size)
    st = diagonal_stats(S, [pindex[s.target] for s in scenarios])
    return ScenarioResult(
        layer=layer, labels=tuple(s.label for s in scenarios),
        targets=tuple(s.target for s in scenarios), probes=tuple(probes), scores=S,
        zscores=zscore_columns(S), accuracy=st["z_accuracy"], mean_rank=st["z_mean_rank"],
        p_value=st["z_p"], raw_accuracy=st["raw_accuracy"], raw_mean_rank=st["raw_mean_rank"],
        raw_p_value=st["raw_p"], chance=st["chance"],
        probe_means={e: float(S[:, j].mean()) for j, e in enumerate(probes)})


# --------------------------------------------------------------------------------------------
# 4. intensity sweeps
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TemplateSweep:
    """One template: the read-out per value and emotion, Spearman rho and the sign check."""

    name: str
    template: str
    values: tuple[int, ...]
    readouts: dict[str, tuple[float, ...]]
    rho: dict[str, Correlation]
    expected: dict[str, int]
    correct: dict[str, bool]


def sign_tally(rhos: Sequence[float], expected: Sequence[int]) -> tuple[int, int, float]:
    """(correct, n, one-sided binomial p vs 0.5) of correlation signs; NaN or 0 is wrong.

    >>> sign_tally([0.5, -0.2, float("nan"), 0.9], [1, -1, 1, -1])
    (2, 4, 0.6875)
    """
    r = np.asarray(rhos, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    ok = np.isfinite(r) & (np.sign(r) == np.sign(e)) & (r != 0)
    hits, n = int(ok.sum()), int(r.size)
    return hits, n, binomial_p(hits, n, 0.5)


@dataclass(frozen=True, eq=False)
class IntensityResult(_Result):
    """Intensity templates: Spearman sign checks (paper-spec 5.4).

    ``signs``: correct signs out of all template x emotion cases (study convention: 24);
    ``p_value``: one-sided binomial test against a coin flip; ``strong``: cases with the
    right sign and |rho| > 0.7.
    """

    layer: int
    emotions: tuple[str, ...]
    templates: tuple[TemplateSweep, ...]
    signs: Rate
    p_value: float
    strong: int
    analysis: str = "intensity"

    def summary(self) -> str:
        """A readable table."""
        head = "".join(f"{e:>13}" for e in self.emotions)
        lines = [f"Intensity sweeps at assistant_start (layer {self.layer}): Spearman rho "
                 "(expected sign; * = as expected)", f"  {'template':<16}{head}"]
        for t in self.templates:
            cells = ""
            for e in self.emotions:
                sign = "+" if t.expected[e] > 0 else "-"
                cells += f"{_fmt(t.rho[e].r, 2):>7} ({sign}){'*' if t.correct[e] else ' '} "
            lines.append(f"  {t.name:<16}{cells.rstrip()}")
        lines.append(f"  signs correct {format_rate(self.signs)}, binomial p vs 0.5 "
                     f"{_fmt_p(self.p_value)}; strong (|rho| > 0.7, right sign) "
                     f"{self.strong}/{self.signs.n}")
        return "\n".join(lines)

    def figure(self) -> Figure:
        """One panel per template, one line per emotion."""
        from emolens.report.figures import fig_intensity_grid

        panels = []
        for t in self.templates:
            xs = np.asarray(t.values, dtype=np.float64)
            pos = xs[xs > 0]
            logx = bool(pos.size >= 2 and pos.max() / pos.min() >= 25)
            right = sum(t.correct.values())
            # each line minus its own mean: the trend is what is tested, and emotions sit
            # at very different levels (the levels are in the legend)
            series = {f"{e} (mean {np.mean(t.readouts[e]):+.3f}, rho {_fmt(t.rho[e].r, 2)}"
                      f"{'' if t.correct[e] else ', wrong sign'})":
                      np.asarray(t.readouts[e]) - np.mean(t.readouts[e])
                      for e in self.emotions}
            panels.append((f"{t.name} ({right}/{len(t.correct)} signs as expected)", xs,
                           series, logx))
        return fig_intensity_grid(
            panels, f"Intensity sweeps at assistant_start, layer {self.layer}: "
                    f"{self.signs.hits}/{self.signs.n} signs as expected",
            ylabel="cosine minus its mean over the values")


def intensity_sweeps(lm: LanguageModel, vectors: EmotionVectors, layer: Any = None,
                     templates: Sequence[IntensityTemplate] = INTENSITY_TEMPLATES,
                     emotions: Sequence[str] = INTENSITY_EMOTIONS,
                     batch_size: int = 16) -> IntensityResult:
    """Read ``emotions`` at ``assistant_start`` for every value of every template and check
    the sign of the Spearman correlation with the number against ``template.expected``.

    >>> r = intensity_sweeps(lm, vecs)  # doctest: +SKIP
    >>> r.signs.n  # doctest: +SKIP
    24
    """
    layer = resolve_layer(lm, vectors, layer)
    emotions = _require(vectors, list(emotions), "the intensity check")
    messages = [m for t in templates for m in t.messages()]
    S = _read_at_assistant_start(lm, vectors, messages, layer, emotions, batch_size)
    sweeps, rhos, exp = [], [], []
    at = 0
    for t in templates:
        block = S[at:at + len(t.values)]
        at += len(t.values)
        readouts = {e: tuple(float(v) for v in block[:, j]) for j, e in enumerate(emotions)}
        rho = {e: spearman(t.values, block[:, j]) for j, e in enumerate(emotions)}
        correct = {}
        for e in emotions:
            want = int(t.expected[e])
            correct[e] = sign_tally([rho[e].r], [want])[0] == 1
            rhos.append(rho[e].r)
            exp.append(want)
        sweeps.append(TemplateSweep(t.name, t.template, tuple(t.values), readouts, rho,
                                    {e: int(t.expected[e]) for e in emotions}, correct))
    hits, n, p = sign_tally(rhos, exp)
    strong = sum(1 for r, e in zip(rhos, exp, strict=True)
                 if math.isfinite(r) and abs(r) > 0.7 and np.sign(r) == np.sign(e))
    return IntensityResult(layer, tuple(emotions), tuple(sweeps), rate(hits, n), p, strong)


# --------------------------------------------------------------------------------------------
# 5. steering validation
# --------------------------------------------------------------------------------------------


def assistant_turn_range(lm: LanguageModel, messages: Sequence[dict[str, str]],
                         enc: ChatEncoding) -> tuple[int, int]:
    """Token range ``[lo, hi)`` of the assistant turn of an encoded prompt: from the first
    token of the generation prompt (e.g. ``<|im_start|>assistant``) to the last token
    (the assistant prefix, e.g. "He feels", included)."""
    bare = lm.format_chat(messages, add_generation_prompt=False)
    if enc.text.startswith(bare) and len(bare) < len(enc.text):
        idx = [i for i, (s, _e) in enumerate(enc.offsets) if s >= len(bare)]
    else:  # templates that rewrite earlier turns: start after the last message's content
        idx = list(range(enc.message_tokens[-1][1], len(enc.input_ids)))
    if not idx:
        raise EmolensError("the prompt has no assistant-turn tokens to steer")
    return idx[0], len(enc.input_ids)


def word_token_ids(lm: LanguageModel, words: Sequence[str]) -> list[int]:
    """The first token of ``" " + word`` for each word (the next token after "He feels")."""
    out = []
    for w in words:
        ids = lm.tokenizer(" " + w, add_special_tokens=False)["input_ids"]
        if not ids:
            raise EmolensError(f"the tokenizer turns {w!r} into no tokens")
        out.append(int(ids[0]))
    return out


def feel_matrix_stats(delta: Any) -> dict[str, Any]:
    """Diagonal mean, off-diagonal mean and how many rows peak on their diagonal.

    ``delta[i, j]``: change in word ``j``'s log-probability when steering with vector ``i``.

    >>> s = feel_matrix_stats([[2.0, -1.0], [0.5, 0.0]])
    >>> s["diagonal_mean"], s["off_diagonal_mean"], s["rows_peak_on_diagonal"].hits
    (1.0, -0.25, 1)
    """
    D = np.asarray(delta, dtype=np.float64)
    n = D.shape[0]
    diag = np.diag(D)
    off = D[~np.eye(n, dtype=bool)] if n > 1 else np.array([math.nan])
    peak = int((D.argmax(axis=1) == np.arange(n)).sum())
    return {"diagonal_mean": float(diag.mean()), "off_diagonal_mean": float(off.mean()),
            "rows_peak_on_diagonal": rate(peak, n), "mean_abs": float(np.abs(D).mean())}


@dataclass(frozen=True, eq=False)
class FeelMatrix:
    """Steering results for one prompt ("He feels" / "I feel").

    ``delta[i, j]``: steered minus plain log-probability of word ``j`` as the next token
    when steering with vector ``i``; ``random_delta[r, j]`` the same for seeded random unit
    directions at the same strength (the control).
    """

    name: str
    prompt: str
    prefix: str
    steered_tokens: tuple[int, int]
    word_tokens: tuple[str, ...]
    plain_logprob: tuple[float, ...]
    delta: np.ndarray
    random_delta: np.ndarray
    diagonal_mean: float
    off_diagonal_mean: float
    rows_peak_on_diagonal: Rate
    mean_abs: float
    random_mean_abs: float
    shared_first_token: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class SteeringResult(_Result):
    """Steering validation (paper-spec 5.5): one :class:`FeelMatrix` per prompt."""

    layer: int
    strength: float
    emotions: tuple[str, ...]
    prompts: tuple[FeelMatrix, ...]
    analysis: str = "steering"

    def summary(self) -> str:
        """A readable table."""
        lines = [f"Steering validation (layer {self.layer}, strength {self.strength:g} of the "
                 "residual norm, on the assistant-turn tokens)"]
        for p in self.prompts:
            lines += [f"  {p.name}: '{p.prompt}' / '{p.prefix}'",
                      f"    diagonal mean {p.diagonal_mean:+.3f}  off-diagonal mean "
                      f"{p.off_diagonal_mean:+.3f}  (log-prob change)",
                      f"    rows peaking on the diagonal {format_rate(p.rows_peak_on_diagonal)}",
                      f"    mean |change|: emotion vectors {p.mean_abs:.3f}, random "
                      f"directions {p.random_mean_abs:.3f}"]
            if p.shared_first_token:
                lines.append(f"    note: words sharing a first token: "
                             f"{', '.join(p.shared_first_token)}")
        return "\n".join(lines)

    def figure(self, prompt: str | None = None) -> Figure:
        """The 12 x 12 log-probability change matrix of one prompt (default: the first)."""
        from emolens.report.figures import fig_probe_matrix

        p = next((x for x in self.prompts if x.name == prompt), None) if prompt else \
            self.prompts[0]
        if p is None:
            raise EmolensError(f"no prompt {prompt!r}; have "
                               f"{', '.join(x.name for x in self.prompts)}")
        return fig_probe_matrix(
            p.delta, self.emotions, self.emotions,
            title=f"Steering '{p.prefix} ...', layer {self.layer}, strength {self.strength:g}: "
                  f"diagonal {p.diagonal_mean:+.2f}, off-diagonal {p.off_diagonal_mean:+.2f}, "
                  f"random-direction mean |change| {p.random_mean_abs:.2f}",
            row_label="steering vector", col_label="next word",
            value_label="change in log-probability")


def _last_logprobs(lm: LanguageModel, ids: Sequence[int], rows: int) -> torch.Tensor:
    """log-softmax of the next-token logits [rows, V] of ``rows`` copies of one prompt."""
    batch = _pad_right(lm, [list(ids)] * rows)
    if "logits_to_keep" in inspect.signature(lm.model.forward).parameters:
        batch["logits_to_keep"] = 1
    with torch.inference_mode():
        logits = lm.forward(batch).logits[:, -1, :].float()
    return torch.log_softmax(logits, dim=-1).cpu()


def steering_validation(lm: LanguageModel, vectors: EmotionVectors, layer: Any = None,
                        strength: float = 0.5, emotions: Sequence[str] = CORE_EMOTIONS,
                        prompts: Sequence[FeelPrompt] = FEEL_PROMPTS, n_random: int = 12,
                        seed: int = 0) -> SteeringResult:
    """Steer with each emotion vector on the assistant-turn tokens and measure the change in
    log-probability of each emotion word as the next token (one batched forward per prompt
    for the emotion vectors, one for the random control, one unsteered).

    >>> r = steering_validation(lm, vecs)  # doctest: +SKIP
    >>> r.prompts[0].delta.shape  # doctest: +SKIP
    (12, 12)
    """
    from emolens.steer import steering
    from emolens.vectors import Direction

    layer = resolve_layer(lm, vectors, layer)
    emotions = _require(vectors, list(emotions), "steering validation")
    vectors.residual_scale(layer)  # fail early, with the file's message, if norms are missing
    words = word_token_ids(lm, emotions)
    tok_t = torch.tensor(words)
    counts: dict[int, list[str]] = {}
    for e, w in zip(emotions, words, strict=True):
        counts.setdefault(w, []).append(e)
    shared = tuple(e for group in counts.values() if len(group) > 1 for e in group)
    rng = np.random.default_rng(seed)
    rand = rng.normal(size=(n_random, vectors.d))
    rand /= np.linalg.norm(rand, axis=1, keepdims=True)
    randoms = [Direction(f"random-{i}", {layer: rand[i].astype(np.float32)})
               for i in range(n_random)]
    results = []
    for fp in prompts:
        messages = _user_chat(fp.user)
        enc = lm.encode_chat(messages, add_generation_prompt=True,
                             assistant_prefix=fp.assistant_prefix)
        span = assistant_turn_range(lm, messages, enc)
        plain = _last_logprobs(lm, enc.input_ids, 1)[0, tok_t]
        with steering(lm, vectors, [{e: strength} for e in emotions], layers=[layer],
                      positions=span):
            steered = _last_logprobs(lm, enc.input_ids, len(emotions))[:, tok_t]
        rdelta = np.zeros((0, len(emotions)))
        if n_random:
            with steering(lm, vectors, [{d: strength} for d in randoms], layers=[layer],
                          positions=span):
                rdelta = (_last_logprobs(lm, enc.input_ids, n_random)[:, tok_t]
                          - plain[None]).double().numpy()
        delta = (steered - plain[None]).double().numpy()
        st = feel_matrix_stats(delta)
        results.append(FeelMatrix(
            name=fp.name, prompt=fp.user, prefix=fp.assistant_prefix, steered_tokens=span,
            word_tokens=tuple(lm.tokenizer.decode([w]) for w in words),
            plain_logprob=tuple(plain.double().tolist()), delta=delta, random_delta=rdelta,
            diagonal_mean=st["diagonal_mean"], off_diagonal_mean=st["off_diagonal_mean"],
            rows_peak_on_diagonal=st["rows_peak_on_diagonal"], mean_abs=st["mean_abs"],
            random_mean_abs=float(np.abs(rdelta).mean()) if rdelta.size else math.nan,
            shared_first_token=shared))
    return SteeringResult(layer, float(strength), tuple(emotions), tuple(results))
