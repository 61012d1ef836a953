"""Whose emotion does a vector track: the user's, or the one the reply will carry?
(paper-spec sections 7.1-7.2.)

On prompts where what the user feels differs from what a fitting reply would feel, the
probes are read at the user's last token and at ``assistant_start``; a greedy reply is then
generated and its mean read-out compared with both positions. The study found the two
prompt positions nearly unrelated (r = 0.11) and the assistant-start read-out predictive of
the reply (r = 0.87, against 0.59 for the user token). A second check uses the shipped
dialogues in which each speaker has a labelled emotion: at the end of a user turn the user's
emotion should outrank the assistant's, and the reverse at the end of an assistant turn.

Correlations pool emotions x prompts, so their points are not independent: beside the
usual Fisher-z interval each one carries a bootstrap interval that resamples whole prompts.

>>> a = np.array([[0.0, 1.0], [1.0, 0.0]]); b = np.array([[0.9, 0.1], [0.2, 0.8]])
>>> c = dialogue_order(a, b, [1, 0], [0, 1])
>>> c.user_first_at_user.hits, c.assistant_first_at_assistant.hits
(2, 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens.concepts import CORE_EMOTIONS, SPEAKER_PROMPTS
from emolens.errors import EmolensError
from emolens.experiments.common import read_scores, require_emotions, resolve_layer, user_chat
from emolens.experiments.registry import Analysis, Context, Option, Result, register
from emolens.stats import (
    Correlation,
    Rate,
    bootstrap_ci,
    format_correlation,
    format_rate,
    pearson,
    rank_of_true,
    rate,
)

if TYPE_CHECKING:  # pragma: no cover
    from emolens.concepts import SpeakerPrompt
    from emolens.corpus import Corpus, Record
    from emolens.lens import LanguageModel
    from emolens.vectors import EmotionVectors

__all__ = ["STUDY_R", "DialogueCheck", "SpeakerResult", "dialogue_order", "dialogue_positions",
           "prompt_bootstrap_ci", "speaker_analysis", "speaker_positions"]

#: The study's correlations (Claude Sonnet 4.5), for side-by-side reporting.
STUDY_R = {"user_vs_start": 0.11, "reply_vs_start": 0.87, "reply_vs_user": 0.59}


def prompt_bootstrap_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0
                        ) -> tuple[float, float]:
    """95% bootstrap interval of Pearson r between ``a`` and ``b`` [prompts, emotions],
    resampling whole prompts (rows), since the emotions of one prompt are not independent.

    >>> rng = np.random.default_rng(0); a = rng.normal(size=(8, 20))
    >>> lo, hi = prompt_bootstrap_ci(a, a + 0.1 * rng.normal(size=a.shape), n_boot=200)
    >>> bool(0.95 < lo <= hi <= 1.0)
    True
    """
    A, B = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if A.shape != B.shape or A.ndim != 2 or A.shape[0] < 2:
        return math.nan, math.nan

    def stat(idx: np.ndarray) -> float:
        return pearson(A[idx].ravel(), B[idx].ravel()).r

    return bootstrap_ci(np.arange(A.shape[0]), stat, n_boot=n_boot, seed=seed)


@dataclass(frozen=True, eq=False)
class DialogueCheck:
    """Labelled two-speaker dialogues: does the present speaker's emotion win?

    ``user_first_at_user``: at the last token of the last user turn, the user's labelled
    emotion scores above the assistant's; ``assistant_first_at_assistant``: the reverse at
    the last token of the last assistant turn (chance 0.5 each). Mean ranks are among the
    probes (1 = top).
    """

    n: int
    probes: tuple[str, ...]
    user_first_at_user: Rate
    assistant_first_at_assistant: Rate
    user_rank_at_user: float
    assistant_rank_at_assistant: float


def dialogue_order(at_user: Any, at_assistant: Any, user_idx: Sequence[int],
                   assistant_idx: Sequence[int], probes: Sequence[str] = ()) -> DialogueCheck:
    """The numbers of the dialogue check from read-outs [n, P] at the two turn ends (pure
    maths); ``user_idx``/``assistant_idx`` are each dialogue's labelled probe columns."""
    U = np.asarray(at_user, dtype=np.float64)
    A = np.asarray(at_assistant, dtype=np.float64)
    u = np.asarray(user_idx, dtype=np.int64)
    a = np.asarray(assistant_idx, dtype=np.int64)
    rows = np.arange(len(u))
    if U.shape != A.shape or U.shape[0] != len(u) or len(a) != len(u) or len(u) == 0:
        raise EmolensError("dialogue read-outs and labels disagree in shape (or are empty)")
    user_wins = int((U[rows, u] > U[rows, a]).sum())
    asst_wins = int((A[rows, a] > A[rows, u]).sum())
    return DialogueCheck(len(u), tuple(probes), rate(user_wins, len(u)),
                         rate(asst_wins, len(u)), float(rank_of_true(U, u).mean()),
                         float(rank_of_true(A, a).mean()))


@dataclass(frozen=True, eq=False)
class SpeakerResult(Result):
    """User token vs ``assistant_start`` vs the generated reply, on :data:`SPEAKER_PROMPTS`.

    ``user_scores``, ``start_scores``, ``reply_scores``: [prompts, emotions] read-outs (a
    reply with no tokens is a NaN row, left out of the correlations). Each correlation has a
    Fisher-z CI (``Correlation``) and a prompt-bootstrap CI (``*_ci_prompts``).
    """

    kind = "speakers"

    layer: int
    emotions: tuple[str, ...]
    labels: tuple[str, ...]
    user_emotions: tuple[str, ...]
    user_token: tuple[str, ...]
    start_token: tuple[str, ...]
    user_scores: np.ndarray
    start_scores: np.ndarray
    reply_scores: np.ndarray
    replies: tuple[str, ...]
    reply_lengths: tuple[int, ...]
    user_vs_start: Correlation
    user_vs_start_ci_prompts: tuple[float, float]
    reply_vs_start: Correlation
    reply_vs_start_ci_prompts: tuple[float, float]
    reply_vs_user: Correlation
    reply_vs_user_ci_prompts: tuple[float, float]
    rising: tuple[tuple[str, float], ...]
    dialogues: DialogueCheck | None
    study: dict[str, float]
    analysis: str = "speakers"

    def summary(self) -> str:
        """A readable table."""
        def line(name: str, c: Correlation, ci: tuple[float, float], key: str) -> str:
            boot = "n/a" if not all(map(math.isfinite, ci)) else f"{ci[0]:.2f} to {ci[1]:.2f}"
            return (f"  {name:<30} {format_correlation(c)}; prompt-bootstrap CI {boot}; "
                    f"study {self.study[key]:.2f}")

        lines = [f"Speakers (layer {self.layer}, {len(self.labels)} prompts x "
                 f"{len(self.emotions)} emotions; user token '{self.user_token[0].strip()}', "
                 f"assistant_start token '{self.start_token[0].strip()}')",
                 line("user token vs assistant_start", self.user_vs_start,
                      self.user_vs_start_ci_prompts, "user_vs_start"),
                 line("reply mean vs assistant_start", self.reply_vs_start,
                      self.reply_vs_start_ci_prompts, "reply_vs_start"),
                 line("reply mean vs user token", self.reply_vs_user,
                      self.reply_vs_user_ci_prompts, "reply_vs_user"),
                 "  rising most from user token to assistant_start: "
                 + ", ".join(f"{e} {d:+.3f}" for e, d in self.rising)]
        if self.dialogues is not None:
            d = self.dialogues
            lines += [f"  dialogues (n = {d.n}, {len(d.probes)} probes): user's emotion above "
                      f"the assistant's at the user turn end {format_rate(d.user_first_at_user)}",
                      f"  {'':<14}assistant's emotion above the user's at the assistant turn "
                      f"end {format_rate(d.assistant_first_at_assistant)}"]
        return "\n".join(lines)


def speaker_positions(lm: LanguageModel, message: str) -> tuple[list[int], int, int]:
    """(token ids, user's last token, assistant_start) of a one-turn chat prompt.

    >>> ids, user, start = speaker_positions(lm, "I lost my keys.")
    >>> lm.tokenizer.decode(ids[user]), user < start == len(ids) - 1
    ('.', True)
    """
    enc = lm.encode_chat(user_chat(message), add_generation_prompt=True)
    lo, hi = enc.message_tokens[-1]
    if hi <= lo:
        raise EmolensError("cannot find the user message in the rendered chat")
    return list(enc.input_ids), hi - 1, enc.assistant_start


def dialogue_positions(lm: LanguageModel, record: Record) -> tuple[list[int], int, int]:
    """(token ids, last token of the last user turn, last token of the last assistant turn).

    >>> from emolens.corpus import Record
    >>> rec = Record(id="d", kind="dialogue", text="-", turns=[
    ...     {"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."}])
    >>> ids, u, a = dialogue_positions(lm, rec)
    >>> lm.tokenizer.decode(ids[u]), lm.tokenizer.decode(ids[a])
    ('!', '.')
    """
    turns = record.turns or []
    enc = lm.encode_chat(turns, add_generation_prompt=False)
    ends = {}
    for i, t in enumerate(turns):
        lo, hi = enc.message_tokens[i]
        if hi > lo:
            ends[t["role"]] = hi - 1
    if "user" not in ends or "assistant" not in ends:
        raise EmolensError(f"dialogue {record.id!r} lacks a user or an assistant turn")
    return list(enc.input_ids), ends["user"], ends["assistant"]


def _dialogue_check(lm: LanguageModel, vectors: EmotionVectors, records: Sequence[Record],
                    layer: int, probes: Sequence[str], batch_size: int) -> DialogueCheck | None:
    pindex = {e: i for i, e in enumerate(probes)}
    usable = [r for r in records if r.turns and r.user_emotion in pindex
              and r.assistant_emotion in pindex and r.user_emotion != r.assistant_emotion]
    if not usable:
        return None
    pos = [dialogue_positions(lm, r) for r in usable]
    got = read_scores(lm, vectors, [p[0] for p in pos], layer, probes,
                      positions=[[p[1], p[2]] for p in pos], batch_size=batch_size)
    return dialogue_order(np.stack([g[0] for g in got]), np.stack([g[1] for g in got]),
                          [pindex[r.user_emotion] for r in usable],
                          [pindex[r.assistant_emotion] for r in usable], probes)


def _correlate(a: np.ndarray, b: np.ndarray) -> tuple[Correlation, tuple[float, float]]:
    ok = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    if ok.sum() == 0:
        return Correlation(math.nan, 0, math.nan, math.nan, math.nan), (math.nan, math.nan)
    return pearson(a[ok].ravel(), b[ok].ravel()), prompt_bootstrap_ci(a[ok], b[ok])


def speaker_analysis(lm: LanguageModel, vectors: EmotionVectors, layer: Any = None,
                     max_new_tokens: int = 20, *, emotions: Sequence[str] | None = None,
                     prompts: Sequence[SpeakerPrompt] = SPEAKER_PROMPTS,
                     corpus: Corpus | None = None, dialogue_check: bool = True,
                     batch_size: int = 16) -> SpeakerResult:
    """User token vs ``assistant_start`` vs greedy reply, plus the labelled-dialogue check.

    ``emotions``: the probes to read (default: every emotion of the file). ``corpus``: where
    the dialogues come from (default: the shipped corpus); ``dialogue_check=False`` skips it.

    >>> from emolens.concepts import SPEAKER_PROMPTS
    >>> r = speaker_analysis(lm, vecs, max_new_tokens=3, prompts=SPEAKER_PROMPTS[:3],
    ...                      dialogue_check=False)
    >>> r.start_scores.shape, r.user_vs_start.n
    ((3, 6), 18)
    """
    layer = resolve_layer(lm, vectors, layer)
    names = require_emotions(vectors, list(vectors.emotions if emotions is None else emotions),
                             "the speaker analysis")
    pos = [speaker_positions(lm, p.message) for p in prompts]
    got = read_scores(lm, vectors, [p[0] for p in pos], layer, names,
                      positions=[[p[1], p[2]] for p in pos], batch_size=batch_size)
    user = np.stack([g[0] for g in got])
    start = np.stack([g[1] for g in got])
    monitor = vectors if tuple(names) == tuple(vectors.emotions) else vectors.subset(names)
    gens = lm.generate_text([user_chat(p.message) for p in prompts],
                            max_new_tokens=max_new_tokens, monitor=monitor, layer=layer)
    reply = np.stack([g.scores.mean(axis=0) if g.n_tokens and g.scores is not None
                      else np.full(len(names), np.nan) for g in gens])
    uvs, uvs_ci = _correlate(user, start)
    rvs, rvs_ci = _correlate(reply, start)
    rvu, rvu_ci = _correlate(reply, user)
    rise = (start - user).mean(axis=0)
    order = np.argsort(-rise, kind="stable")[:5]
    check = None
    if dialogue_check:
        if corpus is None:
            from emolens.corpus import load_corpus

            corpus = load_corpus("default")
        core = [e for e in CORE_EMOTIONS if e in vectors]
        check = _dialogue_check(lm, vectors, corpus.dialogues(), layer, core, batch_size)
    decode = lm.tokenizer.decode
    return SpeakerResult(
        layer=layer, emotions=tuple(names), labels=tuple(p.label for p in prompts),
        user_emotions=tuple(p.user_emotion for p in prompts),
        user_token=tuple(decode([ids[u]]) for ids, u, _ in pos),
        start_token=tuple(decode([ids[s]]) for ids, _, s in pos),
        user_scores=user, start_scores=start, reply_scores=reply,
        replies=tuple(g.text for g in gens), reply_lengths=tuple(g.n_tokens for g in gens),
        user_vs_start=uvs, user_vs_start_ci_prompts=uvs_ci, reply_vs_start=rvs,
        reply_vs_start_ci_prompts=rvs_ci, reply_vs_user=rvu, reply_vs_user_ci_prompts=rvu_ci,
        rising=tuple((names[i], float(rise[i])) for i in order), dialogues=check,
        study=dict(STUDY_R))


def _run(ctx: Context, max_new_tokens: int, dialogue_check: bool) -> SpeakerResult:
    return speaker_analysis(ctx.model(), ctx.vectors, layer=ctx.layer,
                            max_new_tokens=max_new_tokens, corpus=ctx.corpus,
                            dialogue_check=dialogue_check, batch_size=ctx.batch_size)


ANALYSIS = register(Analysis(
    name="speakers", title="Whose emotion? User versus assistant", section="7.1-7.2",
    description="Prompts where the user's feeling differs from a fitting reply's: the read-out "
                "at the user's last token, at assistant_start and over a greedy reply; and "
                "labelled dialogues where each speaker's emotion should win at its own turn.",
    study="User-token vs assistant-colon r = 0.11; the colon predicts the reply (0.87 vs "
          "0.59).",
    run=_run, needs_corpus=True, options=(
        Option("max_new_tokens", 20, "reply length for 'speakers'"),
        Option("dialogue_check", True, "also run the labelled-dialogue check"),
    )))
