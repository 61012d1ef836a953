"""A small KV-cached decoding loop: batched, seeded, streamable.

emolens owns its loop (instead of calling ``model.generate``) so that a monitor can
yield each token with its emotion scores as it is produced, and so that prompt and
generated positions are known exactly for steering.  Its cost per step is one forward
over the new token(s), the same as Hugging Face ``generate``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emolens.errors import SteeringError

if TYPE_CHECKING:  # pragma: no cover
    from emolens.model import LanguageModel
    from emolens.vectors import EmotionVectors

Prompt = Sequence[dict[str, str]] | str


@dataclass
class GeneratedText:
    """One finished generation. ``finished`` is False when it stopped at ``max_new_tokens``."""

    text: str
    token_ids: list[int]
    n_tokens: int
    finished: bool
    prompt_tokens: int
    scores: np.ndarray | None = None  # [n_tokens, E] read-out of each generated token


@dataclass
class TokenStep:
    """One streamed token: its index in the generation, id, text piece and emotion scores."""

    index: int
    token_id: int
    text: str
    scores: np.ndarray | None = None  # [E] at the monitored layer(s), None without a monitor
    alerts: list[Any] | None = None


def encode_prompts(lm: LanguageModel, prompts: Sequence[Prompt]) -> list[list[int]]:
    """Token ids of each prompt: chats go through the chat template, strings stay raw."""
    out = []
    for p in prompts:
        if isinstance(p, str):
            out.append(lm.tokenizer(p, add_special_tokens=True)["input_ids"])
        else:
            out.append(lm.encode_chat(p).input_ids)
    return out


def stop_ids(lm: LanguageModel) -> set[int]:
    """Token ids that end a generation: EOS (one or several) and the chat end marker."""
    ids: set[int] = set()
    for source in (lm.model.generation_config, lm.config):
        eos = getattr(source, "eos_token_id", None)
        ids.update([eos] if isinstance(eos, int) else eos or [])
    if lm.tokenizer.eos_token_id is not None:
        ids.add(lm.tokenizer.eos_token_id)
    for marker in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>"):
        tid = lm.tokenizer.convert_tokens_to_ids(marker)
        if isinstance(tid, int) and tid != lm.tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
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
        sorted_p = sorted_p * keep
        choice = torch.multinomial(sorted_p, 1, generator=generator)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def decode(lm: LanguageModel, prompt_ids: Sequence[Sequence[int]], *, max_new_tokens: int = 64,
           temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
           stop: set[int] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(tokens [B], done [B])`` after each step, left-padding the batch.

    Rows that finished keep receiving the pad token (masked out), as in HF generate.
    """
    device = lm.device
    width = max(len(p) for p in prompt_ids)
    pad = lm.tokenizer.pad_token_id
    ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompt_ids):
        ids[row, width - len(p):] = torch.tensor(p, device=device)
        mask[row, width - len(p):] = 1
    stop_t = torch.tensor(sorted(stop if stop is not None else stop_ids(lm)), device=device)
    generator = None
    if seed is not None and temperature > 0:
        generator = torch.Generator(device=device).manual_seed(seed)
    extra = {"logits_to_keep": 1} if _accepts(lm.model, "logits_to_keep") else {}
    done = torch.zeros(len(prompt_ids), dtype=torch.bool, device=device)
    past, step_ids = None, ids
    for _ in range(max_new_tokens):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1]:]
        out = lm.model(input_ids=step_ids, attention_mask=mask, position_ids=positions,
                       past_key_values=past, use_cache=True, **extra)
        past = out.past_key_values
        tokens = _sample(out.logits[:, -1, :], temperature, top_p, generator)
        tokens = torch.where(done, torch.full_like(tokens, pad), tokens)
        newly_done = torch.isin(tokens, stop_t) & ~done
        yield tokens, done | newly_done
        done = done | newly_done
        if bool(done.all()):
            return
        step_ids = tokens[:, None]
        mask = torch.cat([mask, (~done).long()[:, None]], dim=1)
    # one more forward feeds the last token in, so monitors see every generated position
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1]:]
    lm.model(input_ids=step_ids, attention_mask=mask, position_ids=positions,
             past_key_values=past, use_cache=True, **extra)

def _settings(lm: LanguageModel, monitor: EmotionVectors | None, steer: Any,
              layer: Any, stack: ExitStack) -> Any:
    recorder = None
    if steer is not None:
        from emolens.steer import steering

        vectors, strengths = steer if isinstance(steer, tuple) else (monitor, steer)
        if vectors is None:
            raise SteeringError("steer= needs vectors: pass steer=(vectors, {'calm': 0.1})")
        stack.enter_context(steering(lm, vectors, strengths))
    if monitor is not None:
        from emolens.monitor import recording

        recorder = stack.enter_context(recording(lm, monitor, layer=layer))
    return recorder


def generate_text(lm: LanguageModel, prompts: Sequence[Prompt], *, max_new_tokens: int = 64,
                  temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                  monitor: EmotionVectors | None = None, layer: Any = None,
                  steer: Any = None) -> list[GeneratedText]:
    """Generate a continuation for each prompt in one batch.

    With ``monitor=vectors`` each result carries ``scores`` [n_tokens, E]: the read-out
    of every generated token at its own position (the same numbers a full re-read of
    the finished text gives).  ``steer`` is ``{"calm": 0.1}`` (with ``monitor`` vectors)
    or ``(vectors, {"calm": 0.1})``.
    """
    prompt_ids = encode_prompts(lm, prompts)
    width = max(len(p) for p in prompt_ids)
    rows: list[list[int]] = [[] for _ in prompts]
    finished = [False] * len(prompts)
    with ExitStack() as stack:
        recorder = _settings(lm, monitor, steer, layer, stack)
        for tokens, done in decode(lm, prompt_ids, max_new_tokens=max_new_tokens,
                                   temperature=temperature, top_p=top_p, seed=seed):
            for r, (tok, d) in enumerate(zip(tokens.tolist(), done.tolist(), strict=True)):
                if not finished[r]:
                    if d:
                        finished[r] = True
                    else:
                        rows[r].append(tok)
        scores = recorder.stacked() if recorder is not None else None  # [B, T_total, E]
    results = []
    for r, ids in enumerate(rows):
        per_token = None
        if scores is not None:
            per_token = scores[r, width:width + len(ids)]
        results.append(GeneratedText(
            text=lm.tokenizer.decode(ids, skip_special_tokens=True), token_ids=ids,
            n_tokens=len(ids), finished=finished[r], prompt_tokens=len(prompt_ids[r]),
            scores=per_token))
    return results


def stream(lm: LanguageModel, prompt: Prompt, *, max_new_tokens: int = 64,
           temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
           monitor: EmotionVectors | None = None, layer: Any = None, steer: Any = None,
           rules: Any = None) -> Iterator[TokenStep]:
    """Yield each generated token as soon as it (and its emotion scores) are known.

    With a monitor, token ``t``'s scores come from the forward that reads it in, so a
    token is yielded one step after it is sampled; the last one gets a final forward.
    ``rules`` (an :class:`emolens.monitor.AlertEngine`) is fed each token's scores.
    """
    prompt_ids = encode_prompts(lm, [prompt])
    n_prompt = len(prompt_ids[0])
    pending: list[int] = []
    index = 0
    with ExitStack() as stack:
        recorder = _settings(lm, monitor, steer, layer, stack)

        def emit(tok: int) -> TokenStep:
            nonlocal index
            scores = recorder.position(0, n_prompt + index) if recorder is not None else None
            alerts = rules.update(scores, index, lm.tokenizer.decode([tok])) \
                if rules is not None and scores is not None else None
            step = TokenStep(index, tok, lm.tokenizer.decode([tok]), scores, alerts)
            index += 1
            return step

        for tokens, done in decode(lm, prompt_ids, max_new_tokens=max_new_tokens,
                                   temperature=temperature, top_p=top_p, seed=seed):
            while pending and (recorder is None or recorder.length() > n_prompt + index):
                yield emit(pending.pop(0))
            if bool(done[0]):
                break
            pending.append(int(tokens[0]))
            if recorder is None:
                yield emit(pending.pop(0))
        while pending:
            yield emit(pending.pop(0))
