"""The logit lens (paper-spec 5.2): which tokens does each emotion vector promote and
suppress directly through the unembedding?

>>> [names_emotion(t, e) for t, e in [(" desper", "desperate"), ("sad", "sad"),
...                                   (" pro", "proud"), ("Happiness", "happy")]]
[True, True, False, True]
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emolens.concepts import CORE_EMOTIONS, emotion_word_forms
from emolens.errors import EmolensError
from emolens.experiments.common import directions, require_emotions, resolve_layer
from emolens.experiments.registry import Analysis, Context, Option, Result, register
from emolens.stats import Rate, format_rate, rate

if TYPE_CHECKING:  # pragma: no cover
    from emolens.lens import LanguageModel
    from emolens.vectors import EmotionVectors

__all__ = ["LensRow", "LogitLensResult", "final_norm_gain", "logit_lens", "names_emotion"]


def final_norm_gain(lm: LanguageModel) -> torch.Tensor:
    """The final norm's elementwise scale ``g`` [d] (float32), measured, not guessed.

    The norm runs on a zero-mean probe ``x`` of +-1 entries and on ``-x``; the odd part
    ``(norm(x) - norm(-x)) / 2`` equals ``g * x / rms(x)`` for RMSNorm (``w`` or Gemma's
    ``1 + w``) and LayerNorm alike: LayerNorm's centring does nothing to a zero-mean probe
    and its bias cancels. So ``g = odd part * rms(x) / x``. Without a final norm ``g = 1``.

    >>> bool(torch.allclose(final_norm_gain(lm), lm.parts.final_norm.weight, atol=1e-4))
    True
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
class LogitLensResult(Result):
    """Logit lens of each vector: ``unembed(g * v)`` with ``g`` the final norm's scale.

    ``self_match``: fraction of emotions whose top-k promoted tokens include a spelling of the
    emotion word (:func:`names_emotion`); ``chance_match``: the same rate expected for k
    tokens drawn at random from the vocabulary.
    """

    kind = "logit_lens"

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


def logit_lens(lm: LanguageModel, vectors: EmotionVectors, layer: Any = None, k: int = 5,
               emotions: Sequence[str] = CORE_EMOTIONS) -> LogitLensResult:
    """Tokens each emotion vector promotes and suppresses directly through the unembedding.

    ``logits = W_U (g * v)`` where ``v`` is the unit vector and ``g`` the final norm's
    elementwise scale (:func:`final_norm_gain`). The norm's division by the root mean square
    is one positive number for a single vector and does not change the ranking, so it is not
    applied; the vector is never centred as if it were a token's activation. Output biases
    and logit soft-capping (monotone) are left out.

    >>> r = logit_lens(lm, vecs, k=5, emotions=["happy", "calm"])
    >>> r.rows[0].emotion, len(r.rows[0].top_tokens), r.self_match.n
    ('happy', 5, 2)
    """
    if k < 1:
        raise EmolensError(f"k must be >= 1, got {k}")
    layer = resolve_layer(lm, vectors, layer)
    names = require_emotions(vectors, list(emotions), "the logit lens")
    gain = final_norm_gain(lm)
    W = _unembedding(lm)
    n_vocab = min(int(W.shape[0]), len(lm.tokenizer))  # rows past the tokenizer are padding
    dirs = directions(vectors, layer, names) * gain[None, :]
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


def _run(ctx: Context, k: int) -> LogitLensResult:
    return logit_lens(ctx.model(), ctx.vectors, layer=ctx.layer, k=k)


ANALYSIS = register(Analysis(
    name="logit-lens", title="Logit lens: what each vector says directly", section="5.2",
    description="The tokens each core emotion vector promotes and suppresses through the "
                "final norm and the unembedding, and how often its own word is among them.",
    study="Vectors promote their own emotion's words (desperate -> 'desperate', 'urgent').",
    run=_run, options=(Option("k", 5, "tokens per side for 'logit-lens'"),),
    aliases=("logit_lens",)))
