"""The model side of the behavioural evaluations (study section 9): conditions, the choice
log-odds, sampled replies under steering, the read-out over each transcript, and guards.

Every (condition, scenario) pair is one row of a batch, and the two measures share its work:

1. **Prefill.** The scenario is read once under the row's steering (``positions="all"``: the
   study steered "throughout the evaluation"), with the read-out of every prompt token recorded
   at the read layer (the early-warning trace, and the read-out at the decision point, the
   last token of the generation prompt).
2. **Choice log-odds.** From a copy of the prompt's KV cache, both continuations of each
   choice pair are read under the same steering: ``log P(misaligned) - log P(aligned)`` summed
   over their tokens. Swapping the two continuations flips its sign exactly.
3. **Sampling.** The cache is repeated ``n`` times (plus ``n`` guarded copies where asked) and
   replies are sampled, each token's read-out recorded as it is read in. A guarded reply has
   an :class:`~emolens.alerts.AlertEngine` of its own; when its rule fires, the guard's
   steering switches on for that row from the next forward on, exactly as ``lm.stream(...,
   alerts=[rule], guard={...})`` does for one reply.

Nothing here grades or summarises: :mod:`emolens.experiments.behaviour_stats` does.

>>> items = [Item("a", [{"role": "user", "content": "Hi"}], {"x": ("Yes", "No")})]
>>> conds = [Condition(None, 0.0), Condition("calm", 0.1), Condition("calm", 0.1, guard=True)]
>>> out = run_rows(lm, vecs, items, conds, n=2, max_new_tokens=3, guard=GuardSpec(
...     AlertRule("desperate", -9.0), {"calm": 0.2}))
>>> [(o.condition, len(o.replies), o.logodds["x"] is None) for o in out]
[(0, 2, False), (1, 2, False), (2, 2, True)]
>>> [r.triggered_at for r in out[2].replies]
[0, 0]
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emolens.alerts import AlertEngine, AlertRule, AllOf
from emolens.decode import stop_ids
from emolens.errors import EmolensError
from emolens.readout import recording
from emolens.steer import Steering, apply_steering, build_steering, steering

if TYPE_CHECKING:  # pragma: no cover
    from emolens.lens import LanguageModel
    from emolens.vectors import Direction, EmotionVectors

__all__ = ["Condition", "GuardSpec", "Item", "Reply", "RowOut", "make_conditions",
           "run_rows", "steer_strengths"]


@dataclass(frozen=True)
class Condition:
    """One experimental condition: ``emotion`` steered at ``strength`` (``None``: unsteered;
    ``"random"``: the random-direction control), optionally with the guard.

    >>> Condition("desperate", 0.05).name, Condition(None, 0.0, guard=True).name
    ('desperate +0.05', 'unsteered + guard')
    """

    emotion: str | None
    strength: float
    guard: bool = False

    @property
    def name(self) -> str:
        """A short label, e.g. ``desperate +0.05`` or ``random +0.10 + guard``."""
        base = "unsteered" if self.emotion is None or self.strength == 0 else \
            f"{self.emotion} {self.strength:+.2f}"
        return base + (" + guard" if self.guard else "")

    @property
    def steered(self) -> bool:
        """True when the condition adds a direction (at a non-zero strength)."""
        return self.emotion is not None and self.strength != 0


def make_conditions(emotions: Sequence[str], strengths: Sequence[float],
                    extra: Sequence[str] = (), extra_strengths: Sequence[float] = (),
                    random_control: bool = True) -> list[Condition]:
    """Unsteered first, then each emotion at each non-zero strength, the extra emotions at
    theirs, and the random direction at the largest strength.

    >>> [c.name for c in make_conditions(["calm"], [-0.1, 0, 0.1], ["sad"], [0.1])]
    ['unsteered', 'calm -0.10', 'calm +0.10', 'sad +0.10', 'random +0.10']
    """
    out = [Condition(None, 0.0)]
    for group, values in ((emotions, strengths), (extra, extra_strengths)):
        for e in group:
            out += [Condition(e, float(s)) for s in sorted(values) if s != 0]
    every = [abs(float(s)) for s in list(strengths) + list(extra_strengths) if s != 0]
    if random_control and every:
        out.append(Condition("random", max(every)))
    return list(dict.fromkeys(out))  # without repeats, in order


def steer_strengths(condition: Condition, random_direction: Direction | None
                    ) -> dict[Any, float]:
    """The per-row strengths dict of a condition (empty when unsteered).

    >>> steer_strengths(Condition("calm", 0.1), None)
    {'calm': 0.1}
    """
    if not condition.steered:
        return {}
    if condition.emotion == "random":
        if random_direction is None:
            raise EmolensError("the random-direction control needs a random direction")
        return {random_direction: condition.strength}
    return {condition.emotion: condition.strength}


@dataclass(frozen=True)
class Item:
    """One scenario: its chat (ending with the user's turn) and its choice pairs
    ``{name: (misaligned, aligned)}``."""

    id: str
    chat: list[dict[str, str]]
    choices: Mapping[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class GuardSpec:
    """The guard of the guarded conditions: ``rule`` fires, ``strengths`` switch on."""

    rule: AlertRule | AllOf
    strengths: Mapping[str, float]


@dataclass
class Reply:
    """One sampled reply; ``scores`` [tokens, E] is each token's read-out as it was read in
    (steered stream); ``triggered_at`` the token where the guard's rule fired (guarded
    replies only)."""

    text: str
    token_ids: list[int]
    finished: bool
    scores: np.ndarray
    triggered_at: int | None = None


@dataclass
class RowOut:
    """What one (condition, item) row produced: ``logodds[pair]`` (None for guarded rows),
    the prompt's token ids and read-out [prompt tokens, E], and the replies."""

    condition: int
    item: int
    prompt_ids: list[int]
    prompt_scores: np.ndarray
    logodds: dict[str, float | None]
    replies: list[Reply]


# ------------------------------------------------------------------------------ the loop


class _GatedSteering(Steering):
    """Steering that acts only on the rows whose gate is 1 (a guard per row)."""

    gate: torch.Tensor

    def delta_for(self, layer: int, hidden: torch.Tensor, state: Any) -> torch.Tensor | None:
        if not bool(self.gate.any()):
            return None
        delta = super().delta_for(layer, hidden, state)
        if delta is None:
            return None
        return delta * self.gate.to(delta.device, delta.dtype)[:, None, None]  # [R, 1, d]


def _keep_kw(lm: LanguageModel) -> dict[str, int]:
    params = inspect.signature(lm.model.forward).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}


def _steer(stack: ExitStack, lm: LanguageModel, vectors: EmotionVectors,
           rows: Sequence[Mapping[Any, float]], layers: Sequence[int]) -> None:
    if any(rows):
        stack.enter_context(steering(lm, vectors, list(rows), layers=layers))


def _forward(lm: LanguageModel, ids: torch.Tensor, mask: torch.Tensor, past: Any,
             **kw: Any) -> Any:
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
    return lm.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                    past_key_values=past, use_cache=True, **kw)


def _continuation_logprobs(lm: LanguageModel, vectors: EmotionVectors, past: Any,
                           mask: torch.Tensor, first: torch.Tensor,
                           rows: Sequence[Mapping[Any, float]], conts: list[list[list[int]]],
                           layers: Sequence[int]) -> np.ndarray:
    """[B, K] summed log-probabilities of each row's K continuations after its prompt."""
    B, K = len(conts), len(conts[0])
    index = torch.arange(B, device=mask.device).repeat_interleave(K)
    cache = copy.deepcopy(past)
    cache.reorder_cache(index)
    flat = [c for row in conts for c in row]
    cb = lm.pad(flat, side="right")
    cids, cmask = cb["input_ids"], cb["attention_mask"]
    full = torch.cat([mask[index], cmask], dim=1)
    with ExitStack() as stack:
        _steer(stack, lm, vectors, [rows[i] for i in index.tolist()], layers)
        out = _forward(lm, cids, full, cache)
    total = first[index].gather(1, cids[:, :1]).squeeze(1)  # the first token
    if cids.shape[1] > 1:
        for lo in range(0, len(flat), 8):  # a few rows at a time: [rows, Lc, V] in fp32
            logits = out.logits[lo:lo + 8, :-1].float()
            nxt = logits.gather(2, cids[lo:lo + 8, 1:, None]).squeeze(2) \
                - torch.logsumexp(logits, dim=-1)
            total[lo:lo + 8] += (nxt * cmask[lo:lo + 8, 1:]).sum(1)
    return total.view(B, K).cpu().numpy().astype(np.float64)


def _sample(logits: torch.Tensor, temperature: float, top_p: float,
            gen: torch.Generator | None) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sp, order = probs.sort(dim=-1, descending=True)
        keep = sp.cumsum(-1) - sp < top_p
        pick = torch.multinomial(sp * keep, 1, generator=gen)
        return order.gather(-1, pick).squeeze(-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


def _sample_replies(lm: LanguageModel, vectors: EmotionVectors, past: Any,
                    mask: torch.Tensor, first: torch.Tensor, source: list[int],
                    rows: Sequence[Mapping[Any, float]], guarded: list[bool],
                    guard: GuardSpec | None, *, layers: Sequence[int], read_layer: int,
                    max_new_tokens: int, temperature: float, top_p: float, seed: int
                    ) -> list[Reply]:
    """Sample one reply per entry of ``source`` (a prompt row index) from the shared cache."""
    device = mask.device
    index = torch.tensor(source, device=device)
    past.reorder_cache(index)
    mask = mask[index]
    logits = first[index]
    R = len(source)
    stops = torch.tensor(sorted(stop_ids(lm)), device=device)
    pad = lm.tokenizer.pad_token_id or 0
    gen = torch.Generator(device=device).manual_seed(seed) if temperature > 0 else None
    engines: list[AlertEngine | None] = [
        AlertEngine(vectors.emotions, [guard.rule]) if g and guard is not None else None
        for g in guarded]
    triggered: list[int | None] = [None] * R
    ids: list[list[int]] = [[] for _ in range(R)]
    finished = [False] * R
    done = torch.zeros(R, dtype=torch.bool, device=device)
    with ExitStack() as stack:
        _steer(stack, lm, vectors, [rows[i] for i in source], layers)
        gate = torch.zeros(R)
        if guard is not None and any(guarded):
            plan = build_steering(lm, vectors, dict(guard.strengths), layers=layers)
            gated = _GatedSteering(plan.deltas, "all")
            gated.gate = gate
            stack.enter_context(apply_steering(lm, gated))
        rec = stack.enter_context(recording(lm, vectors, layer=read_layer))
        for step in range(max_new_tokens + 1):
            if step:  # the last forward read token step-1 in: its scores are known now
                for r, eng in enumerate(engines):
                    if eng is None or step - 1 >= len(ids[r]):
                        continue
                    if eng.update(rec.position(r, step - 1), step - 1) and triggered[r] is None:
                        triggered[r] = step - 1
                        gate[r] = 1.0  # steers the forward that reads the next token in
            if step == max_new_tokens or bool(done.all()):
                break
            tok = _sample(logits, temperature, top_p, gen)
            tok = torch.where(done, torch.full_like(tok, pad), tok)
            now = done | torch.isin(tok, stops)
            for r, (t, d) in enumerate(zip(tok.tolist(), now.tolist(), strict=True)):
                if not finished[r]:
                    if d:
                        finished[r] = True
                    else:
                        ids[r].append(t)
            done = now
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = _forward(lm, tok[:, None], mask, past, **_keep_kw(lm))
            past, logits = out.past_key_values, out.logits[:, -1]
        all_scores = rec.stacked() if rec.length() else np.zeros((R, 0, len(vectors)))
    return [Reply(lm.tokenizer.decode(ids[r], skip_special_tokens=True), ids[r], finished[r],
                  np.asarray(all_scores[r, :len(ids[r])], dtype=np.float32), triggered[r])
            for r in range(R)]


@torch.inference_mode()
def _run_chunk(lm: LanguageModel, vectors: EmotionVectors, prompts: list[list[int]],
               rows: list[dict[Any, float]], conts: list[list[list[int]]] | None,
               counts: list[tuple[int, int]], guard: GuardSpec | None, *,
               layers: Sequence[int], read_layer: int, max_new_tokens: int,
               temperature: float, top_p: float, seed: int, batch_size: int
               ) -> tuple[np.ndarray, np.ndarray | None, list[list[Reply]]]:
    batch = lm.pad(prompts, side="left")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with ExitStack() as stack:
        _steer(stack, lm, vectors, rows, layers)
        rec = stack.enter_context(recording(lm, vectors, layer=read_layer))
        out = _forward(lm, ids, mask, None, **_keep_kw(lm))
    prompt_scores = rec.stacked()
    past = out.past_key_values
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    lp = None
    if conts is not None:
        lp = _continuation_logprobs(lm, vectors, past, mask, first, rows, conts, layers)
    source = [i for i, (a, b) in enumerate(counts) for _ in range(a + b)]
    guarded = [k >= a for a, b in counts for k in range(a + b)]
    replies: list[list[Reply]] = [[] for _ in prompts]
    if source and max_new_tokens > 0:
        for g, lo in enumerate(range(0, len(source), batch_size)):  # from one shared prefill
            part = source[lo:lo + batch_size]
            cache = past if lo + batch_size >= len(source) else copy.deepcopy(past)
            got = _sample_replies(lm, vectors, cache, mask, first, part, rows,
                                  guarded[lo:lo + batch_size], guard, layers=layers,
                                  read_layer=read_layer, max_new_tokens=max_new_tokens,
                                  temperature=temperature, top_p=top_p, seed=seed + 104729 * g)
            for i, rep in zip(part, got, strict=True):
                replies[i].append(rep)
    return prompt_scores, lp, replies


def run_rows(lm: LanguageModel, vectors: EmotionVectors, items: Sequence[Item],
             conditions: Sequence[Condition], *, n: int = 1, layers: Any = None,
             read_layer: int | None = None, max_new_tokens: int = 64,
             temperature: float = 0.8, top_p: float = 0.95, seed: int = 0,
             batch_size: int = 16, guard: GuardSpec | None = None,
             random_direction: Direction | None = None,
             log: Callable[[str], None] | None = None) -> list[RowOut]:
    """Every (condition, item) row: prefill, choice log-odds (unguarded conditions), ``n``
    sampled replies (``n=0``: none). Rows of one item share a batch (equal prompt lengths);
    at most ``batch_size`` sampled replies run together (more replies of one prompt than
    that are sampled in groups from copies of its one prefill).

    ``layers`` (default: the file's default layer) are steered, ``read_layer`` (default: the
    file's default layer) read. Guarded conditions sample with ``guard``; their log-odds is
    None (a guard acts only while the reply is written). ``log`` hears of each item done.
    """
    if guard is None and any(c.guard for c in conditions):
        raise EmolensError("guarded conditions need a guard (GuardSpec)")
    steer_at = lm.resolve_layers(layers) if layers is not None else [vectors.default_layer]
    read_at = vectors.default_layer if read_layer is None else int(read_layer)
    if random_direction is None and any(c.emotion == "random" for c in conditions):
        random_direction = vectors.random_direction(seed)
    enc = [lm.encode_chat(it.chat, add_generation_prompt=True).input_ids for it in items]
    names = sorted({k for it in items for k in it.choices})
    tok = lm.tokenizer
    cont_ids = [[[tok(text, add_special_tokens=False)["input_ids"] or [tok.eos_token_id]
                  for text in it.choices[k]] for k in names] for it in items]
    # one prefill per (base condition, item); the guarded twin shares it
    bases: list[Condition] = []
    for c in conditions:
        b = Condition(c.emotion, c.strength)
        if b not in bases:
            bases.append(b)
    cidx = {c: i for i, c in enumerate(conditions)}
    out: list[RowOut] = []
    per_row = max(1, 2 * n if guard is not None else n)
    chunk = max(1, batch_size // per_row)
    for ii in range(len(items)):
        for lo in range(0, len(bases), chunk):
            part = bases[lo:lo + chunk]
            rows = [steer_strengths(b, random_direction) for b in part]
            logodds_rows = [b in cidx for b in part]
            conts = None
            if names and any(logodds_rows):
                conts = [[c for pair in cont_ids[ii] for c in pair] for _ in part]
            counts = [(n if b in cidx else 0,
                       n if Condition(b.emotion, b.strength, True) in cidx else 0)
                      for b in part]
            scores, lp, replies = _run_chunk(
                lm, vectors, [enc[ii]] * len(part), rows, conts, counts, guard,
                layers=steer_at, read_layer=read_at, max_new_tokens=max_new_tokens,
                temperature=temperature, top_p=top_p, seed=seed + 7919 * ii + lo,
                batch_size=max(1, batch_size))
            P = len(enc[ii])
            for j, b in enumerate(part):
                a, _g = counts[j]
                plain = {k: (None if lp is None else float(lp[j, 2 * q] - lp[j, 2 * q + 1]))
                         for q, k in enumerate(names)}
                for guarded, reps in ((False, replies[j][:a]), (True, replies[j][a:])):
                    cond = Condition(b.emotion, b.strength, guarded)
                    if cond not in cidx:
                        continue
                    out.append(RowOut(cidx[cond], ii, list(enc[ii]),
                                      np.asarray(scores[j, -P:], dtype=np.float32),
                                      {k: None for k in names} if guarded else plain, reps))
        if log is not None:
            log(f"item {ii + 1}/{len(items)} ({items[ii].id}) done")
    out.sort(key=lambda r: (r.condition, r.item))
    return out
