"""The model side of the preference experiment (study section 8): asking a model to choose,
and reading what it makes of each option.

* :func:`encode_choice` renders "Would you prefer to (A) ... or (B) ...?" through the chat
  template with the reply prefilled with "(", and finds the tokens of each option.
* :func:`choice_logits` returns the logits of "A" and "B" at the position after the "("
  for many rows at once. Each row may carry its own steering (its own vector and strength,
  on its own token ranges), so the conditions of the steering test run as rows of one
  batch. The template's opening (system prompt, "Would you prefer to (A) ") is the same in
  every row: it is run once and its KV cache shared by every batch (``prefix_cache``).
* :func:`feel_scores` reads every probe on an activity's own tokens in "How would you feel
  about {activity}?", averaged over those tokens and the given layers, through the
  experiments' one read path (:func:`emolens.experiments.common.read_scores`).

>>> ids, a_tok, b_tok = encode_choice(lm, "sort a list", "write a poem")
>>> lm.tokenizer.decode(ids[a_tok[0]:a_tok[1]]).strip(), lm.tokenizer.decode(ids[-1:])
('sort a list', '(')
>>> logits = choice_logits(lm, [ChoiceRow(tuple(ids))], answer_token_ids(lm))
>>> logits.shape
(1, 2)
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emolens.concepts.activities import (
    CHOICE_PREFILL,
    choice_prompt,
    choice_spans,
    feel_prompt,
    feel_span,
)
from emolens.errors import EmolensError
from emolens.experiments.common import read_scores, user_chat

if TYPE_CHECKING:  # pragma: no cover
    from emolens.lens import LanguageModel
    from emolens.vectors import EmotionVectors

__all__ = ["ChoiceRow", "answer_token_ids", "choice_logits", "encode_choice", "feel_scores",
           "middle_layers", "shared_prefix"]


def middle_layers(n_layers: int) -> list[int]:
    """The middle third of the layers, ``round(n/3) .. round(2n/3) - 1``: where the study
    read its preference probes and steered (its "middle layers"; it gives no exact band).

    >>> middle_layers(30), middle_layers(4)
    ([10, 11, 12, 13, 14, 15, 16, 17, 18, 19], [1, 2])
    """
    lo, hi = round(n_layers / 3), round(2 * n_layers / 3)
    return list(range(lo, max(hi, lo + 1)))


def answer_token_ids(lm: LanguageModel) -> tuple[int, int]:
    """The token ids of "A" and "B", the answers after the "(" prefill.

    >>> a, b = answer_token_ids(lm)
    >>> lm.tokenizer.decode([a]), lm.tokenizer.decode([b])
    ('A', 'B')
    """
    out = []
    for letter in ("A", "B"):
        ids = lm.tokenizer(letter, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise EmolensError(f"the tokenizer of {lm.name} spells {letter!r} with {len(ids)} "
                               "tokens; the choice needs it to be one token")
        out.append(int(ids[0]))
    return out[0], out[1]


def _span_tokens(offsets: Sequence[tuple[int, int]], start: int, end: int, what: str
                 ) -> tuple[int, int]:
    idx = [i for i, (s, e) in enumerate(offsets) if s < end and e > start]
    if not idx:
        raise EmolensError(f"{what} covers no token")
    return idx[0], idx[-1] + 1


def encode_choice(lm: LanguageModel, a: str, b: str
                  ) -> tuple[list[int], tuple[int, int], tuple[int, int]]:
    """Token ids of the choice between activity texts ``a`` and ``b`` (user turn through the
    chat template, reply prefilled with "("), and the token ranges ``[lo, hi)`` of option
    A's and option B's text."""
    content = choice_prompt(a, b)
    enc = lm.encode_chat(user_chat(content), add_generation_prompt=True,
                         assistant_prefix=CHOICE_PREFILL)
    at = enc.text.find(content)
    if at < 0:
        raise EmolensError("the chat template rewrote the question; cannot find the options")
    (sa, ea), (sb, eb) = choice_spans(a, b)
    return (list(enc.input_ids), _span_tokens(enc.offsets, at + sa, at + ea, "option A"),
            _span_tokens(enc.offsets, at + sb, at + eb, "option B"))


@dataclass(frozen=True)
class ChoiceRow:
    """One row of :func:`choice_logits`: token ids, and optionally steering: ``steer``
    maps emotion names or :class:`~emolens.vectors.Direction` objects to strengths, added
    on the row's own token ``ranges`` (``[lo, hi)`` each) at the steered layers."""

    ids: tuple[int, ...]
    steer: Mapping[Any, float] | None = None
    ranges: tuple[tuple[int, int], ...] = ()

    @property
    def steered(self) -> bool:
        """True when the row carries steering on some tokens."""
        return bool(self.steer) and bool(self.ranges)


def shared_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix every row shares.

    >>> shared_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]])
    2
    """
    if not rows:
        return 0
    first = rows[0]
    n = min(len(r) for r in rows)
    for r in rows[1:]:
        k = 0
        while k < n and r[k] == first[k]:
            k += 1
        n = k
    return n


def _accepts(lm: LanguageModel, name: str) -> bool:
    return name in inspect.signature(lm.model.forward).parameters


@torch.inference_mode()
def choice_logits(lm: LanguageModel, rows: Sequence[ChoiceRow], answers: tuple[int, int], *,
                  vectors: EmotionVectors | None = None, layers: Sequence[int] = (),
                  batch_size: int = 16, prefix_cache: bool = True,
                  progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Logits ``[len(rows), 2]`` of the two answer tokens at the last position of each row.

    Rows with ``steer`` are steered on their own ``ranges`` at ``layers`` (strengths in
    units of the layer's residual norm, as everywhere in emolens; names are looked up in
    ``vectors``); other rows in the same batch are not touched. Rows are sorted by length
    so a batch holds rows of one length where it can (the same question under several
    conditions has no padding at all). With ``prefix_cache`` the opening every row shares
    (up to the first steered token) runs once and its KV cache is reused: the same numbers
    as without it, to float rounding, for about half the work on chat templates with a
    system prompt. ``progress`` is called with the number of rows done after each batch.
    """
    if not rows:
        return np.zeros((0, 2))
    if any(r.steered for r in rows) and not layers:
        raise EmolensError("steered rows need the layers to steer")
    ids = [list(r.ids) for r in rows]
    if any(len(x) < 2 for x in ids):
        raise EmolensError("every choice row needs at least two tokens")
    cut = min(shared_prefix(ids), min(len(x) for x in ids) - 1)
    starts = [lo for r in rows if r.steered for lo, _hi in r.ranges]
    cut = min([cut, *starts]) if prefix_cache else 0
    cache = None
    extra = {"logits_to_keep": 1} if _accepts(lm, "logits_to_keep") else {}
    if cut >= 2:  # run the shared opening once (unsteered: no steered token lies in it)
        head = torch.tensor([ids[0][:cut]], device=lm.device)
        cache = lm.model(input_ids=head, attention_mask=torch.ones_like(head),
                         use_cache=True, **extra).past_key_values
    else:
        cut = 0
    order = sorted(range(len(rows)), key=lambda i: (len(ids[i]), i))
    out = np.zeros((len(rows), 2))
    step = max(1, int(batch_size))
    for lo in range(0, len(order), step):
        chunk = order[lo:lo + step]
        out[chunk] = _forward_batch(lm, [rows[i] for i in chunk], answers, cut, cache,
                                    vectors, layers, extra)
        if progress is not None:
            progress(lo + len(chunk))
    return out


def _forward_batch(lm: LanguageModel, rows: Sequence[ChoiceRow], answers: tuple[int, int],
                   cut: int, cache: Any, vectors: EmotionVectors | None,
                   layers: Sequence[int], extra: dict[str, Any]) -> np.ndarray:
    """One forward of a left-padded batch (after the cached opening when ``cut`` > 0)."""
    from emolens.steer import RowRanges, apply_steering, build_steering

    tails = [list(r.ids[cut:]) for r in rows]
    width = max(len(t) for t in tails)
    batch = lm.pad(tails, side="left")
    mask = batch["attention_mask"]
    kwargs: dict[str, Any] = {}
    if cache is not None:
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(len(rows))
        mask = torch.cat([torch.ones(len(rows), cut, dtype=mask.dtype, device=mask.device),
                          mask], dim=1)
        kwargs["past_key_values"] = past
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, cut:]
    plan = None
    if any(r.steered for r in rows):
        # token t of a row sits in column t + (its padding); with the cached opening the
        # first forward starts at column `cut`, so the ranges are columns of the full mask
        # (steering sees no left padding there); without it, counted from the first real
        # token (steering skips the left padding itself)
        per_row = []
        for r, tail in zip(rows, tails, strict=True):
            shift = width - len(tail) if cache is not None else 0
            per_row.append([(a + shift, b + shift) for a, b in r.ranges] if r.steered else None)
        if vectors is None:
            raise EmolensError("steered rows need the vector file (their strengths are in "
                               "units of its residual norms)")
        strengths = [dict(r.steer) if r.steered and r.steer else {} for r in rows]
        plan = build_steering(lm, vectors, strengths, layers=list(layers),
                              positions=RowRanges(per_row))
    call = dict(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions,
                use_cache=cache is not None, **kwargs, **extra)
    if plan is None:
        logits = lm.model(**call).logits
    else:
        with apply_steering(lm, plan):
            logits = lm.model(**call).logits
    last = logits[:, -1, :].float()
    return last[:, list(answers)].double().cpu().numpy()


def feel_scores(lm: LanguageModel, vectors: EmotionVectors, texts: Sequence[str],
                layers: Sequence[int], batch_size: int = 16,
                emotions: Sequence[str] | None = None) -> np.ndarray:
    """Every probe ``[len(texts), E]`` on each activity's own tokens in "How would you feel
    about {activity}?" (user turn, then the generation prompt), averaged over those tokens
    and over ``layers``.

    >>> feel_scores(lm, vecs, ["sort a list", "write a poem"], [1, 2]).shape
    (2, 6)
    """
    inputs, positions = [], []
    for text in texts:
        content = feel_prompt(text)
        enc = lm.encode_chat(user_chat(content), add_generation_prompt=True)
        at = enc.text.find(content)
        if at < 0:
            raise EmolensError("the chat template rewrote the question; cannot find the "
                               "activity")
        s, e = feel_span(text)
        lo, hi = _span_tokens(enc.offsets, at + s, at + e, f"activity {text!r}")
        inputs.append(enc.input_ids)
        positions.append(list(range(lo, hi)))
    reads = read_scores(lm, vectors, inputs, list(layers),  # type: ignore[arg-type]
                        emotions, positions=positions, batch_size=batch_size)
    return np.stack([r.mean(axis=0) for r in reads])
