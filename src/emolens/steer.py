"""Add emotion directions to the residual stream: the causal half of emolens.

Strength is a fraction of the layer's residual-stream scale stored in the vector file
(the robust, median token norm by default): 0.05 is gentle, 0.5 is strong.  Positions
are named and keep their meaning under a KV cache:

* ``"all"`` — every token, prompt and generated;
* ``"prompt"`` — the tokens of the first forward of a run (the prompt);
* ``"generated"`` — every token after the prompt;
* ``"assistant_start"`` — the last prompt token;
* ``(start, end)`` — prompt tokens ``start..end-1`` (use :func:`char_span_tokens` to map a
  character span through the tokenizer's offsets).

``strengths`` may be one dict for the whole batch or a list with one dict per row.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emolens import hooks
from emolens.errors import SteeringError

if TYPE_CHECKING:  # pragma: no cover
    from emolens.model import ChatEncoding, LanguageModel
    from emolens.vectors import Direction, EmotionVectors

NAMED_POSITIONS = ("all", "prompt", "generated", "assistant_start")
Strengths = Mapping[Any, float]


def char_span_tokens(encoding: ChatEncoding, start: int, end: int) -> tuple[int, int]:
    """Token range covering the character span [start, end) of an encoded prompt."""
    idx = encoding.tokens_in_span(start, end)
    if not idx:
        raise SteeringError(f"character span {start}..{end} covers no token")
    return idx[0], idx[-1] + 1


def _delta_rows(vectors: EmotionVectors, rows: Sequence[Strengths], layer: int,
                robust: bool) -> np.ndarray:
    """[B, d] steering delta of each row at ``layer``: sum of strength * scale * unit direction."""
    scale = None
    out = np.zeros((len(rows), vectors.matrix(layer).shape[1]), dtype=np.float32)
    for r, strengths in enumerate(rows):
        for key, strength in strengths.items():
            if strength == 0:
                continue
            if scale is None:
                scale = vectors.residual_scale(layer, robust=robust)  # errors on zero/missing
            direction = vectors[key] if isinstance(key, str) else key
            unit = _unit(direction, layer)
            out[r] += np.float32(strength * scale) * unit
    return out


def _unit(direction: Direction, layer: int) -> np.ndarray:
    vec = np.asarray(direction.at(layer), dtype=np.float32)
    norm = float(np.linalg.norm(vec))
    if not np.isfinite(norm) or norm == 0:
        raise SteeringError(f"direction {direction.name!r} is zero at layer {layer}")
    return vec / norm


@dataclass
class Steering:
    """A live steering intervention; ``active`` can be switched (guardrails do)."""

    deltas: dict[int, torch.Tensor]  # layer -> [B or 1, 1, d]
    positions: Any
    active: bool = True

    def delta_for(self, layer: int, hidden: torch.Tensor, state: hooks.ForwardState
                  ) -> torch.Tensor | None:
        if not self.active:
            return None
        delta = self.deltas[layer]
        if delta.device != hidden.device or delta.dtype != hidden.dtype:
            delta = self.deltas[layer] = delta.to(hidden.device, hidden.dtype)  # once
        pos, offset, width = self.positions, state.offset, hidden.shape[1]
        if pos == "all":
            return delta
        if pos == "prompt":
            return delta if offset == 0 else None
        if pos == "generated":
            if offset >= state.prompt_len:
                return delta
            if offset + width <= state.prompt_len:
                return None
            cols = torch.arange(offset, offset + width, device=hidden.device)
            return delta * (cols >= state.prompt_len)[None, :, None].to(hidden.dtype)
        # token positions in prompt coordinates, shifted by each row's left padding
        if pos == "assistant_start":
            lo, hi = state.prompt_len - 1, state.prompt_len
            pad = torch.zeros(hidden.shape[0], dtype=torch.long, device=hidden.device)
        else:
            lo, hi = pos
            pad = state.pad_left.to(hidden.device) if state.pad_left is not None else \
                torch.zeros(hidden.shape[0], dtype=torch.long, device=hidden.device)
        cols = torch.arange(offset, offset + width, device=hidden.device)[None, :]
        inside = (cols >= lo + pad[:, None]) & (cols < hi + pad[:, None])
        if not bool(inside.any()):
            return None
        return delta * inside[:, :, None].to(hidden.dtype)


def build_steering(lm: LanguageModel, vectors: EmotionVectors,
                   strengths: Strengths | Sequence[Strengths], *, layers: Any = None,
                   positions: Any = "all", robust: bool = True) -> Steering:
    """Compile a steering request into per-layer delta tensors (no hooks yet)."""
    rows = [strengths] if isinstance(strengths, Mapping) else list(strengths)
    if not rows:
        raise SteeringError("no steering strengths given")
    if isinstance(positions, str) and positions not in NAMED_POSITIONS:
        raise SteeringError(f"unknown position {positions!r}; use one of "
                            f"{', '.join(NAMED_POSITIONS)} or a (start, end) token range")
    if not isinstance(positions, str):
        lo, hi = positions
        if not 0 <= lo < hi:
            raise SteeringError(f"bad token range {positions!r}")
        positions = (int(lo), int(hi))
    layer_ids = [vectors.default_layer] if layers is None else lm.resolve_layers(layers)
    deltas = {}
    for layer in layer_ids:
        d = torch.from_numpy(_delta_rows(vectors, rows, layer, robust))
        deltas[layer] = d[:, None, :]  # [B, 1, d] broadcasts over tokens
    return Steering(deltas, positions)


@contextmanager
def steering(lm: LanguageModel, vectors: EmotionVectors,
             strengths: Strengths | Sequence[Strengths], *, layers: Any = None,
             positions: Any = "all", robust: bool = True) -> Iterator[Steering]:
    """Steer every forward of ``lm`` run inside the ``with`` block.

    >>> with lm.steer(vecs, {"calm": 0.1, "desperate": -0.05}):  # doctest: +SKIP
    ...     print(lm.generate_text(["Tell me about your day."])[0].text)

    All-zero strengths add nothing, so the output is bit-identical to no steering.
    """
    plan = build_steering(lm, vectors, strengths, layers=layers, positions=positions,
                          robust=robust)
    if all(not bool(d.any()) for d in plan.deltas.values()):
        yield plan  # strength 0 everywhere: no hooks at all
        return
    with ExitStack() as stack:
        state = stack.enter_context(hooks.track_forward(lm.model))
        stack.enter_context(hooks.edit_residual(
            lm.layer_modules(list(plan.deltas)),
            lambda layer, hidden: plan.delta_for(layer, hidden, state)))
        yield plan


@dataclass
class Guardrail:
    """Conditional steering: off until an alert rule fires, then on for the rest of the run.

    Pass ``guardrail.on_alert`` as the :class:`emolens.monitor.AlertEngine` callback.
    Because a token's scores are known one forward after it is sampled, steering takes
    effect from the second token after the one that crossed the threshold.
    """

    steering: Steering
    triggered_at: int | None = None

    def __post_init__(self) -> None:
        self.steering.active = False

    def on_alert(self, alert: Any) -> None:
        if self.triggered_at is None:
            self.triggered_at = alert.token_index
        self.steering.active = True


@contextmanager
def guardrail(lm: LanguageModel, vectors: EmotionVectors, strengths: Strengths, *,
              layers: Any = None, positions: Any = "generated") -> Iterator[Guardrail]:
    """Install steering that stays off until :meth:`Guardrail.on_alert` is called."""
    with steering(lm, vectors, strengths, layers=layers, positions=positions) as plan:
        yield Guardrail(plan)
