"""Steering validation (paper-spec 5.5): steering with an emotion vector on the assistant
turn should raise the log-probability of that emotion's word after "He feels" / "I feel".

>>> s = feel_matrix_stats([[2.0, -1.0], [0.5, 0.0]])
>>> s["diagonal_mean"], s["off_diagonal_mean"], s["rows_peak_on_diagonal"].hits
(1.0, -0.25, 1)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emolens.concepts import CORE_EMOTIONS, FEEL_PROMPTS
from emolens.errors import EmolensError
from emolens.experiments.common import require_emotions, resolve_layer, user_chat
from emolens.experiments.registry import Analysis, Context, Option, Result, register
from emolens.stats import Rate, format_rate, rate

if TYPE_CHECKING:  # pragma: no cover
    from emolens.concepts import FeelPrompt
    from emolens.lens import LanguageModel
    from emolens.model import ChatEncoding
    from emolens.vectors import EmotionVectors

__all__ = ["FeelMatrix", "SteeringResult", "assistant_turn_range", "feel_matrix_stats",
           "steering_validation", "word_token_ids"]


def assistant_turn_range(lm: LanguageModel, messages: Sequence[dict[str, str]],
                         enc: ChatEncoding) -> tuple[int, int]:
    """Token range ``[lo, hi)`` of the assistant turn of an encoded prompt: from the first
    token of the generation prompt (e.g. ``<|im_start|>assistant``) to the last token
    (the assistant prefix, e.g. "He feels", included).

    >>> msgs = [{"role": "user", "content": "Hi"}]
    >>> enc = lm.encode_chat(msgs, add_generation_prompt=True, assistant_prefix="I feel")
    >>> lo, hi = assistant_turn_range(lm, msgs, enc)
    >>> lm.tokenizer.decode(enc.input_ids[lo:hi])
    '<|im_start|>assistant\\nI feel'
    """
    bare = lm.format_chat(messages, add_generation_prompt=False)
    if enc.text.startswith(bare) and len(bare) < len(enc.text):
        idx = [i for i, (s, _e) in enumerate(enc.offsets) if s >= len(bare)]
    else:  # templates that rewrite earlier turns: start after the last message's content
        idx = list(range(enc.message_tokens[-1][1], len(enc.input_ids)))
    if not idx:
        raise EmolensError("the prompt has no assistant-turn tokens to steer")
    return idx[0], len(enc.input_ids)


def word_token_ids(lm: LanguageModel, words: Sequence[str]) -> list[int]:
    """The first token of ``" " + word`` for each word (the next token after "He feels").

    >>> len(word_token_ids(lm, ["calm", "sad"]))
    2
    """
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
class SteeringResult(Result):
    """Steering validation (paper-spec 5.5): one :class:`FeelMatrix` per prompt."""

    kind = "steering"

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

    def prompt(self, name: str | None = None) -> FeelMatrix:
        """The results of prompt ``name`` (default: the first)."""
        if name is None:
            return self.prompts[0]
        for p in self.prompts:
            if p.name == name:
                return p
        raise EmolensError(f"no prompt {name!r}; have {', '.join(x.name for x in self.prompts)}")


def _last_logprobs(lm: LanguageModel, ids: Sequence[int], rows: int) -> torch.Tensor:
    """log-softmax of the next-token logits [rows, V] of ``rows`` copies of one prompt."""
    batch = lm.pad([list(ids)] * rows)
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

    >>> r = steering_validation(lm, vecs, emotions=vecs.emotions, n_random=2)
    >>> r.prompts[0].delta.shape, r.prompts[0].random_delta.shape
    ((6, 6), (2, 6))
    """
    from emolens.steer import steering
    from emolens.vectors import Direction

    layer = resolve_layer(lm, vectors, layer)
    emotions = require_emotions(vectors, list(emotions), "steering validation")
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
        messages = user_chat(fp.user)
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


def _run(ctx: Context, strength: float, n_random: int) -> SteeringResult:
    return steering_validation(ctx.model(), ctx.vectors, layer=ctx.layer, strength=strength,
                               n_random=n_random, seed=ctx.seed)


ANALYSIS = register(Analysis(
    name="steering", title="Steering validation: 'He feels' / 'I feel'", section="5.5",
    description="Each core vector added on the assistant turn: the change in log-probability "
                "of each emotion word as the next token, beside random directions at the "
                "same strength.",
    study="Steering at 0.5 raises the matching word's log-probability (about +2).",
    run=_run, options=(
        Option("strength", 0.5, "steering strength for 'steering', in residual-norm units"),
        Option("n_random", 12, "random directions in the control"),
    )))
