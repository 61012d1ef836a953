"""A small KV-cached decoding loop: batched, seeded, streamable.

emolens owns its loop (instead of calling ``model.generate``) so that a monitor can
yield each token with its emotion scores as it is produced, and so that prompt and
generated positions are known exactly for steering.  Its cost per step is one forward
over the new token(s), the same as Hugging Face ``generate``.

A token's read-out comes from the forward that *reads it in*, one step after it was
sampled; with a monitor the loop therefore runs one last forward (stopped early, at the
deepest monitored layer) so the final generated token is read too.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emolens import hooks
from emolens.errors import EmolensError, SteeringError

if TYPE_CHECKING:  # pragma: no cover
    from emolens.alerts import Alert, AlertEngine
    from emolens.model import ModelAdapter as LanguageModel
    from emolens.readout import Recorder
    from emolens.vectors import EmotionVectors

Prompt = Sequence[dict[str, str]] | str

__all__ = ["GeneratedText", "TokenStep", "decode", "encode_prompts", "generate_text",
           "stop_ids", "stream"]
#: Above this, one generation is refused (a typo such as 1e9 would run for days).
MAX_NEW_TOKENS = 1 << 16


@dataclass
class GeneratedText:
    """One finished generation. ``finished`` is False when it stopped at ``max_new_tokens``.

    With a monitor, ``scores`` [n_tokens, E] is the read-out of each generated token and
    ``prompt_scores`` [prompt_tokens, E] that of the prompt (emotions in ``emotions``).
    """

    text: str
    token_ids: list[int]
    n_tokens: int
    finished: bool
    prompt_tokens: int
    scores: np.ndarray | None = None
    prompt_scores: np.ndarray | None = None
    prompt_ids: list[int] = field(default_factory=list)
    emotions: tuple[str, ...] = ()


@dataclass
class TokenStep:
    """One streamed token: its index in the generation, id, text piece and emotion scores.

    ``text`` pieces concatenate to the decoded generation (a piece that ends inside a
    multi-byte character is held back, up to three tokens, until the character is
    complete; so a generation cut inside one loses that last partial character).
    """

    index: int
    token_id: int
    text: str
    scores: np.ndarray | None = None  # [E] at the monitored layer(s), None without a monitor
    alerts: list[Alert] | None = None


def encode_prompts(lm: LanguageModel, prompts: Sequence[Prompt], room: int = 0
                   ) -> list[list[int]]:
    """Token ids of each prompt: chats go through the chat template (with the generation
    prompt), strings stay raw (with the tokenizer's BOS).  A prompt that leaves fewer than
    ``room`` positions of the model's context for the reply is refused."""
    if not prompts:
        raise EmolensError("no prompts given")
    out = [lm.encode_input(p, add_generation_prompt=True, room=room).input_ids for p in prompts]
    if any(len(p) == 0 for p in out):
        raise EmolensError("every prompt needs at least one token")
    return out


def stop_ids(lm: LanguageModel) -> set[int]:
    """Token ids that end a generation: EOS (one or several) and the chat end marker."""
    ids: set[int] = set()
    for source in (getattr(lm.model, "generation_config", None), lm.config):
        eos = getattr(source, "eos_token_id", None)
        ids.update([eos] if isinstance(eos, int) else eos or [])
    if lm.tokenizer.eos_token_id is not None:
        ids.add(lm.tokenizer.eos_token_id)
    vocab = lm.tokenizer.get_vocab()
    for marker in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>"):
        if marker in vocab:
            ids.add(int(vocab[marker]))
    return ids


def _accepts(model: torch.nn.Module, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


def _sample(logits: torch.Tensor, temperature: float, top_p: float,
            generator: torch.Generator | None) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p  # always keeps the most likely token
        choice = torch.multinomial(sorted_p * keep, 1, generator=generator)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def decode(lm: LanguageModel, prompt_ids: Sequence[Sequence[int]], *, max_new_tokens: int = 64,
           temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
           stop: set[int] | None = None, feed_last: bool = False,
           feed_last_layer: int | None = None,
           ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(tokens [B], done [B])`` after each step, left-padding the batch.

    ``done[r]`` is True from the step whose token ends row ``r`` (that token, a stop
    id, is not part of the text).  Finished rows keep receiving the pad token, masked
    out, as in Hugging Face ``generate``.  With ``feed_last``, after the last step one
    more forward reads the last sampled tokens in (for monitors); ``feed_last_layer``
    stops that forward after the given decoder block.
    """
    if not 0 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise EmolensError(f"max_new_tokens must be in 0..{MAX_NEW_TOKENS}, got {max_new_tokens}")
    if not math.isfinite(temperature) or temperature < 0:
        raise EmolensError(f"temperature must be a finite number >= 0, got {temperature}")
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise EmolensError(f"top_p must be in (0, 1], got {top_p}")
    if max_new_tokens == 0:
        return
    device = lm.device
    pad = lm.tokenizer.pad_token_id or 0
    batch = lm.pad(prompt_ids, side="left")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    stop_t = torch.tensor(sorted(stop if stop is not None else stop_ids(lm)), dtype=torch.long,
                          device=device)
    generator = None
    if seed is not None and temperature > 0:
        generator = torch.Generator(device=device).manual_seed(seed)
    extra = {"logits_to_keep": 1} if _accepts(lm.model, "logits_to_keep") else {}
    done = torch.zeros(len(prompt_ids), dtype=torch.bool, device=device)
    past, step_ids = None, ids

    def forward() -> Any:
        # position ids from the mask, so left padding does not shift absolute positions
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1]:]
        return lm.model(input_ids=step_ids, attention_mask=mask, position_ids=positions,
                        past_key_values=past, use_cache=True, **extra)

    for _ in range(max_new_tokens):
        out = forward()
        past = out.past_key_values
        tokens = _sample(out.logits[:, -1, :], temperature, top_p, generator)
        tokens = torch.where(done, torch.full_like(tokens, pad), tokens)
        now_done = done | torch.isin(tokens, stop_t)
        yield tokens, now_done
        done = now_done
        if bool(done.all()):
            return
        step_ids = tokens[:, None]
        mask = torch.cat([mask, (~done).long()[:, None]], dim=1)
    if feed_last:
        if feed_last_layer is None:
            forward()
        else:  # only the monitored layers are needed: skip the rest and the unembedding
            hooks.run_capture(forward, {feed_last_layer: lm.layers[feed_last_layer]},
                              reduce=lambda _i, _h: None)


def _settings(lm: LanguageModel, monitor: EmotionVectors | None, steer: Any,
              layer: Any, mode: str, stack: ExitStack) -> Recorder | None:
    """Enter steering (first, so the monitor reads the steered stream) and recording."""
    if steer is not None:
        from emolens.steer import steering

        if isinstance(steer, tuple):
            vectors, strengths, *rest = steer
            options = rest[0] if rest else {}
        else:
            vectors, strengths, options = monitor, steer, {}
        if vectors is None:
            raise SteeringError("steer= needs vectors: pass steer=(vectors, {'calm': 0.1})")
        stack.enter_context(steering(lm, vectors, strengths, **options))
    if monitor is None:
        return None
    from emolens.readout import recording

    return stack.enter_context(recording(lm, monitor, layer=layer, mode=mode))


class _Detokenizer:
    """Turn a growing list of token ids into text pieces that concatenate to the whole."""

    MAX_HELD = 3  # a UTF-8 character spans at most 4 byte-tokens

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = ""
        self.held = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        full = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if (full.endswith("\ufffd") and self.held < self.MAX_HELD) \
                or not full.startswith(self.emitted):
            self.held += 1  # inside a multi-byte character: wait for the rest
            return ""
        piece, self.emitted, self.held = full[len(self.emitted):], full, 0
        return piece


def generate_text(lm: LanguageModel, prompts: Sequence[Prompt], *, max_new_tokens: int = 64,
                  temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                  monitor: EmotionVectors | None = None, layer: Any = None,
                  mode: str = "auto", steer: Any = None) -> list[GeneratedText]:
    """Generate a continuation for each prompt (a chat or a raw string) in one batch.

    With ``monitor=vectors`` each result carries ``scores`` [n_tokens, E], the read-out
    of every generated token at its own position (the numbers a full re-read of prompt +
    generated tokens gives), and ``prompt_scores``.  ``steer`` is ``{"calm": 0.1}`` (with
    ``monitor`` vectors), ``(vectors, strengths)`` or ``(vectors, strengths, options)``
    where options go to :func:`emolens.steer.steering`; or wrap the call in ``lm.steer``.

    >>> out = generate_text(lm, [[{"role": "user", "content": "Hi!"}], "Once upon"],
    ...                     max_new_tokens=5, monitor=vecs)
    >>> [o.n_tokens <= 5 for o in out], out[0].scores.shape[1]
    ([True, True], 6)
    """
    if isinstance(prompts, str) or (prompts and isinstance(prompts[0], dict)):
        raise EmolensError("generate_text takes a list of prompts (texts or chats); for one "
                           "prompt use lm.generate(prompt)")
    prompt_ids = encode_prompts(lm, prompts, room=max(0, int(max_new_tokens)))
    width = max(len(p) for p in prompt_ids)
    rows: list[list[int]] = [[] for _ in prompts]
    finished = [False] * len(prompts)
    with ExitStack() as stack:
        recorder = _settings(lm, monitor, steer, layer, mode, stack)
        last_layer = max(recorder.layers) if recorder is not None else None
        for tokens, done in decode(lm, prompt_ids, max_new_tokens=max_new_tokens,
                                   temperature=temperature, top_p=top_p, seed=seed,
                                   feed_last=recorder is not None, feed_last_layer=last_layer):
            for r, (tok, d) in enumerate(zip(tokens.tolist(), done.tolist(), strict=True)):
                if finished[r]:
                    continue
                if d:
                    finished[r] = True
                else:
                    rows[r].append(tok)
        scores = recorder.stacked() if recorder is not None else None  # [B, columns, E]
    results = []
    for r, ids in enumerate(rows):
        gen_scores = prompt_scores = None
        if scores is not None and monitor is not None:
            gen_scores = scores[r, width:width + len(ids)]
            prompt_scores = scores[r, width - len(prompt_ids[r]):width]
        results.append(GeneratedText(
            text=lm.tokenizer.decode(ids, skip_special_tokens=True), token_ids=ids,
            n_tokens=len(ids), finished=finished[r], prompt_tokens=len(prompt_ids[r]),
            scores=gen_scores, prompt_scores=prompt_scores, prompt_ids=prompt_ids[r],
            emotions=tuple(monitor.emotions) if monitor is not None else ()))
    return results


def stream(lm: LanguageModel, prompt: Prompt, *, max_new_tokens: int = 64,
           temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
           monitor: EmotionVectors | None = None, layer: Any = None, mode: str = "auto",
           steer: Any = None, rules: AlertEngine | None = None) -> Iterator[TokenStep]:
    """Yield each generated token as soon as it (and, with a monitor, its scores) is known.

    With a monitor, token ``t``'s scores come from the forward that reads it in, so it is
    yielded one step after it is sampled.  ``rules`` (an :class:`emolens.alerts.AlertEngine`)
    is fed each token's scores; alerts that fire are attached to the step, and its callback
    (e.g. a :class:`emolens.steer.Guardrail`) acts before the next forward.
    Hooks stay installed until the iterator is exhausted or closed.

    >>> steps = list(stream(lm, "Once upon a time", max_new_tokens=4, monitor=vecs))
    >>> len(steps) <= 4 and all(s.scores.shape == (6,) for s in steps)
    True
    """
    if rules is not None and monitor is None:
        raise SteeringError("alert rules need a monitor: pass monitor=vectors")
    prompt_ids = encode_prompts(lm, [prompt], room=max(0, int(max_new_tokens)))
    n_prompt = len(prompt_ids[0])
    detok = _Detokenizer(lm.tokenizer)
    with ExitStack() as stack:
        recorder = _settings(lm, monitor, steer, layer, mode, stack)
        last_layer = max(recorder.layers) if recorder is not None else None

        def emit(index: int, tok: int) -> TokenStep:
            scores = alerts = None
            if recorder is not None:
                scores = recorder.position(0, n_prompt + index)
            piece = detok.push(tok)
            if rules is not None and scores is not None:
                alerts = rules.update(scores, index, piece)
            return TokenStep(index, tok, piece, scores, alerts)

        pending: int | None = None  # sampled, not yet read in (monitor only)
        index = 0
        for tokens, done in decode(lm, prompt_ids, max_new_tokens=max_new_tokens,
                                   temperature=temperature, top_p=top_p, seed=seed,
                                   feed_last=recorder is not None, feed_last_layer=last_layer):
            if pending is not None:  # the forward that produced ``tokens`` read it in
                yield emit(index, pending)
                index, pending = index + 1, None
            if bool(done[0]):
                break
            tok = int(tokens[0])
            if recorder is None:
                yield emit(index, tok)
                index += 1
            else:
                pending = tok
        if pending is not None:  # max_new_tokens reached: the final forward read it in
            yield emit(index, pending)
