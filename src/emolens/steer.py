"""Add emotion directions to the residual stream: the causal half of emolens.

Strength is a fraction of the layer's residual-stream scale stored in the vector file
(the robust, median token norm by default): 0.05 is gentle, 0.5 is strong.  Positions
are named and keep their meaning under a KV cache:

* ``"all"`` — every token, prompt and generated;
* ``"prompt"`` — the tokens of the first forward of a run (the prompt);
* ``"generated"`` — every token after the prompt;
* ``"assistant_start"`` — the last prompt token (the study's "Assistant:" colon when the
  prompt ends with the generation prompt);
* ``(start, end)`` — tokens ``start..end-1`` counted from each row's first real token
  (left padding is skipped); use :func:`char_span_tokens` to map a character span
  through the tokenizer's offsets;
* a list with one entry per batch row — each entry a ``(start, end)`` range, a list of
  such ranges, or ``None`` (that row is not steered): every row gets its own tokens,
  counted as above.  With per-row strengths this runs different conditions (different
  vectors on different tokens) as rows of one batch:

  >>> ids = [lm.encode_input(t).input_ids for t in ("I feel calm.", "Rain again today.")]
  >>> with steering(lm, vecs, [{"happy": 0.5}, {"sad": 0.5}], positions=[(1, 3), None]):
  ...     out = lm.forward(lm.pad(ids, side="left"))
  >>> out.logits.shape[0]
  2

``strengths`` may be one dict for the whole batch or a list with one dict per row.
Keys are emotion names or :class:`emolens.vectors.Direction` objects.

Under a KV cache the prompt is the first forward of a run.  When the whole sequence is
re-run without a cache, pass ``prompt_len`` (columns) so "prompt" and "generated" keep
their meaning.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emolens import hooks
from emolens.errors import SteeringError
from emolens.model import default_layer

if TYPE_CHECKING:  # pragma: no cover
    from emolens.model import ChatEncoding
    from emolens.model import ModelAdapter as LanguageModel
    from emolens.vectors import Direction, EmotionVectors

NAMED_POSITIONS = ("all", "prompt", "generated", "assistant_start")
#: Strengths beyond this (10x the residual norm) only produce noise; refused as a typo.
MAX_STRENGTH = 10.0
Strengths = Mapping[Any, float]

__all__ = ["NAMED_POSITIONS", "Guardrail", "RowRanges", "Steering", "apply_steering",
           "build_steering", "char_span_tokens", "parse_strengths", "steering"]


def char_span_tokens(encoding: ChatEncoding, start: int, end: int) -> tuple[int, int]:
    """Token range covering the character span [start, end) of an encoded prompt."""
    idx = encoding.tokens_in_span(start, end)
    if not idx:
        raise SteeringError(f"character span {start}..{end} covers no token")
    return idx[0], idx[-1] + 1


def parse_strengths(specs: Sequence[str]) -> dict[str, float]:
    """``["calm=0.1", "desperate=-0.05"]`` -> ``{"calm": 0.1, "desperate": -0.05}``.

    >>> parse_strengths(["calm=0.1", "at ease=-0.05"])
    {'calm': 0.1, 'at ease': -0.05}
    """
    out: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.rpartition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = out.get(name.strip(), 0.0) + float(value)
        except ValueError:
            raise SteeringError(f"cannot read steering {spec!r}; write NAME=STRENGTH, "
                                "e.g. calm=0.1") from None
    return out


def _unit(direction: Direction, layer: int) -> np.ndarray:
    vec = np.asarray(direction.at(layer), dtype=np.float64)
    norm = float(np.linalg.norm(vec))
    if not np.isfinite(norm) or norm == 0:
        raise SteeringError(f"direction {direction.name!r} is zero at layer {layer}")
    return vec / norm


def _delta_rows(vectors: EmotionVectors | None, rows: Sequence[Strengths], layer: int,
                robust: bool, scale: float | None) -> np.ndarray:
    """[B, d] steering delta of each row at ``layer``: sum of strength * scale * unit direction."""
    out: np.ndarray | None = None
    for r, strengths in enumerate(rows):
        for key, strength in strengths.items():
            if not math.isfinite(float(strength)) or abs(float(strength)) > MAX_STRENGTH:
                raise SteeringError(f"steering strength for {getattr(key, 'name', key)!r} must be "
                                    f"a finite number within ±{MAX_STRENGTH:g} (a fraction of "
                                    f"the residual norm; 0.05 gentle, 0.5 strong), got {strength}")
            direction = vectors[key] if isinstance(key, str) and vectors is not None else key
            if isinstance(key, str) and vectors is None:
                raise SteeringError(f"steering by name ({key!r}) needs an EmotionVectors file")
            unit = _unit(direction, layer)  # checked even at strength 0: typos still fail
            if out is None:
                out = np.zeros((len(rows), unit.shape[0]), dtype=np.float64)
            if strength == 0:
                continue
            if scale is not None:
                s = scale
            elif vectors is not None:
                s = vectors.residual_scale(layer, robust=robust)
            else:
                s = direction.residual_scale(layer, robust=robust)
            out[r] += float(strength) * s * unit
    if out is None:
        raise SteeringError("no steering directions given")
    return out.astype(np.float32)


@dataclass
class Steering:
    """A compiled steering intervention; ``active`` can be switched (guardrails do).

    ``deltas[layer]`` is [rows, 1, d]; rows is 1 (the same for the whole batch) or the
    batch size.  ``prompt_len`` overrides the prompt width taken from the first forward.
    """

    deltas: dict[int, torch.Tensor]
    positions: Any
    active: bool = True
    prompt_len: int | None = None

    @property
    def is_zero(self) -> bool:
        """True when every delta is exactly zero (nothing would change)."""
        return all(not bool(d.any()) for d in self.deltas.values())

    def delta_for(self, layer: int, hidden: torch.Tensor, state: hooks.ForwardState
                  ) -> torch.Tensor | None:
        """The delta to add to ``hidden`` [B, n, d] (columns ``state.offset`` onward).

        Returns None when no position of this forward is steered; allocates a mask only
        when a forward straddles the boundary of the steered positions.
        """
        if not self.active:
            return None
        delta = self.deltas[layer]
        if delta.shape[0] not in (1, hidden.shape[0]):
            raise SteeringError(f"steering has {delta.shape[0]} rows of strengths but the "
                                f"batch has {hidden.shape[0]} rows")
        if delta.device != hidden.device or delta.dtype != hidden.dtype:
            delta = self.deltas[layer] = delta.to(hidden.device, hidden.dtype)  # once
        pos, offset, width = self.positions, state.offset, hidden.shape[1]
        if isinstance(pos, RowRanges):
            if pos.rows != hidden.shape[0]:
                raise SteeringError(f"steering has token ranges for {pos.rows} rows but the "
                                    f"batch has {hidden.shape[0]} rows")
            pad = state.pad_left
            if pad is not None and (pad.shape[0] != pos.rows or not bool(pad.any())):
                pad = None
            inside = pos.mask(offset, width, pad, hidden.device)
            return None if inside is None else delta * inside[:, :, None].to(hidden.dtype)
        if pos == "all":
            return delta
        prompt_len = self.prompt_len if self.prompt_len is not None else state.prompt_len
        if pos == "prompt":
            lo, hi, pad = 0, prompt_len, None
        elif pos == "generated":
            lo, hi, pad = prompt_len, None, None
        elif pos == "assistant_start":
            lo, hi, pad = prompt_len - 1, prompt_len, None
        else:  # a token range counted from each row's first real token
            lo, hi = pos
            pad = state.pad_left
        if pad is None or not bool(pad.any()):  # the same columns for every row
            if (hi is None or offset + width <= hi) and offset >= lo:
                return delta  # the whole forward is inside
            if (hi is not None and offset >= hi) or offset + width <= lo:
                return None
            cols = torch.arange(offset, offset + width, device=hidden.device)
            inside = (cols >= lo) if hi is None else (cols >= lo) & (cols < hi)
            return delta * inside[None, :, None].to(hidden.dtype)
        pad = pad.to(hidden.device)[:, None]
        cols = torch.arange(offset, offset + width, device=hidden.device)[None, :]
        inside = (cols >= lo + pad) & (cols < hi + pad)
        if not bool(inside.any()):
            return None
        return delta * inside[:, :, None].to(hidden.dtype)


def _rows(strengths: Any) -> list[Strengths]:
    if isinstance(strengths, Mapping):
        return [strengths]
    rows = list(strengths)
    if not rows or not all(isinstance(r, Mapping) for r in rows):
        raise SteeringError("strengths must be a dict {name: strength} or a list of such "
                            "dicts, one per batch row")
    return rows


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _range(spec: Any) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in spec)
    except (TypeError, ValueError):
        raise SteeringError(f"positions must be a name, a (start, end) token range or a list "
                            f"with one range (or None) per row, got {spec!r}") from None
    if not 0 <= lo < hi:
        raise SteeringError(f"bad token range {spec!r}: need 0 <= start < end")
    return (lo, hi)


class RowRanges:
    """Token ranges per batch row (the compiled form of a per-row ``positions`` list).

    ``lo`` and ``hi`` are ``[rows, k]`` (row ``r``'s ranges, empty slots ``0..0``); a
    token ``t`` of row ``r`` (counted from the row's first real token) is steered when
    ``lo[r, j] <= t < hi[r, j]`` for some ``j``.

    >>> rr = RowRanges([(2, 4), [(0, 1), (5, 7)], None])
    >>> rr.rows, rr.lo.tolist(), rr.hi.tolist()
    (3, [[2, 0], [0, 5], [0, 0]], [[4, 0], [1, 7], [0, 0]])
    """

    def __init__(self, entries: Sequence[Any]) -> None:
        per_row: list[list[tuple[int, int]]] = []
        for entry in entries:
            if entry is None:
                per_row.append([])
            elif len(entry) == 2 and all(_is_int(x) for x in entry):
                per_row.append([_range(entry)])
            else:
                per_row.append([_range(e) for e in entry])
        if not per_row:
            raise SteeringError("a per-row positions list needs one entry per batch row")
        k = max(1, max(len(r) for r in per_row))
        lo = torch.zeros(len(per_row), k, dtype=torch.long)
        hi = torch.zeros_like(lo)
        for r, ranges in enumerate(per_row):
            for j, (a, b) in enumerate(ranges):
                lo[r, j], hi[r, j] = a, b
        self.lo, self.hi = lo, hi
        self.rows = len(per_row)
        self.first = min((a for r in per_row for a, _b in r), default=0)
        self.last = int(hi.max())  # one past the last steered token of any row

    def __repr__(self) -> str:
        return f"RowRanges(rows={self.rows}, ranges={int((self.hi > self.lo).sum())})"

    def mask(self, offset: int, width: int, pad: torch.Tensor | None,
             device: torch.device) -> torch.Tensor | None:
        """[rows, width] bool: which columns ``offset..offset+width-1`` are steered (None:
        none are). ``pad`` [rows] is each row's left padding (None: no padding)."""
        shift = 0 if pad is None else int(pad.max())
        if offset >= self.last + shift or offset + width <= self.first:
            return None  # e.g. decoding past every range: no allocation on the hot path
        if self.lo.device != device:
            self.lo, self.hi = self.lo.to(device), self.hi.to(device)
        cols = torch.arange(offset, offset + width, device=device)[None, :]
        if pad is not None:
            cols = cols - pad.to(device)[:, None]
        cols = cols[:, :, None]
        inside = ((cols >= self.lo[:, None, :]) & (cols < self.hi[:, None, :])).any(-1)
        return inside if bool(inside.any()) else None


def _check_positions(positions: Any) -> Any:
    if isinstance(positions, str):
        if positions not in NAMED_POSITIONS:
            raise SteeringError(f"unknown position {positions!r}; use one of "
                                f"{', '.join(NAMED_POSITIONS)} or a (start, end) token range")
        return positions
    if isinstance(positions, RowRanges):
        return positions
    if isinstance(positions, Sequence) and positions and not all(_is_int(x) for x in positions):
        return RowRanges(positions)  # one entry per batch row
    return _range(positions)


def build_steering(lm: LanguageModel, vectors: EmotionVectors | Direction,
                   strengths: Strengths | Sequence[Strengths] | float, *, layers: Any = None,
                   positions: Any = "all", robust: bool = True, scale: float | None = None,
                   prompt_len: int | None = None) -> Steering:
    """Compile a steering request into per-layer delta tensors (no hooks yet).

    ``vectors`` is an EmotionVectors file (strengths keyed by emotion name or Direction)
    or a single Direction with a float strength.  ``scale`` replaces the file's residual
    norm (needed for a bare Direction).
    """
    from emolens.vectors import Direction

    if isinstance(vectors, Direction):
        vectors.check_model(lm)
        if isinstance(strengths, (int, float)):
            strengths = {vectors: float(strengths)}
        elif isinstance(strengths, Sequence) and all(
                isinstance(s, (int, float)) for s in strengths):
            strengths = [{vectors: float(s)} for s in strengths]  # one strength per row
        direction, file = vectors, None
    else:
        vectors.check_model(lm)
        direction, file = None, vectors
        if isinstance(strengths, (int, float)):
            raise SteeringError("a bare strength needs a Direction (vecs['calm']); with a "
                                "vector file pass {'calm': 0.1}")
    rows = _rows(strengths)
    positions = _check_positions(positions)
    if layers is not None:
        layer_ids = lm.resolve_layers(layers)
    elif file is not None:
        layer_ids = [file.default_layer]
    else:
        layer_ids = [default_layer(lm.n_layers, among=direction.layers)]
    deltas = {}
    for layer in layer_ids:
        d = torch.from_numpy(_delta_rows(file, rows, layer, robust, scale))
        deltas[layer] = d[:, None, :]  # [rows, 1, d] broadcasts over tokens
    return Steering(deltas, positions, prompt_len=prompt_len)


@contextmanager
def steering(lm: LanguageModel, vectors: EmotionVectors | Direction,
             strengths: Strengths | Sequence[Strengths] | float, *, layers: Any = None,
             positions: Any = "all", robust: bool = True, scale: float | None = None,
             prompt_len: int | None = None) -> Iterator[Steering]:
    """Steer every forward of ``lm`` run inside the ``with`` block.

    >>> plain = lm.generate("Tell me about your day.", max_new_tokens=6)
    >>> with steering(lm, vecs, {"calm": 0.5, "desperate": -0.5}):
    ...     steered = lm.generate("Tell me about your day.", max_new_tokens=6)
    >>> with steering(lm, vecs["calm"], 0.5):                 # a Direction knows its scale
    ...     also = lm.generate("Tell me about your day.", max_new_tokens=6)
    >>> with steering(lm, vecs, [{"happy": 0.2}, {"sad": 0.2}], positions="generated"):
    ...     two = lm.generate_text(["Hi!", "Hi!"], max_new_tokens=4)
    >>> isinstance(steered, str), len(two)
    (True, 2)

    All-zero strengths install no hook, so the output is bit-identical to no steering.
    """
    plan = build_steering(lm, vectors, strengths, layers=layers, positions=positions,
                          robust=robust, scale=scale, prompt_len=prompt_len)
    with apply_steering(lm, plan):
        yield plan


@contextmanager
def apply_steering(lm: LanguageModel, plan: Steering) -> Iterator[Steering]:
    """Install a compiled :class:`Steering` (from :func:`build_steering`) while open."""
    if plan.is_zero:  # strength 0 everywhere: no hooks at all
        yield plan
        return
    with ExitStack() as stack:
        state = stack.enter_context(hooks.track_forward(lm.model))
        stack.enter_context(hooks.edit_residual(
            lm.layer_modules(list(plan.deltas)),
            lambda layer, hidden: plan.delta_for(layer, hidden, state)))
        yield plan


@dataclass
class Guardrail:
    """Conditional steering: off until an alert fires, then on for the rest of the run.

    Pass :meth:`on_alert` as the :class:`emolens.alerts.AlertEngine` callback (the
    :class:`emolens.alerts.Watch` wiring does).  A
    token's scores are known one forward after it is sampled, so steering first acts on
    the forward that reads in the token *after* the one that crossed the threshold
    (and on every later one).
    """

    steering: Steering
    triggered_at: int | None = None
    rule: str | None = None

    def __post_init__(self) -> None:
        self.steering.active = False

    def on_alert(self, alert: Any) -> None:
        """Switch steering on (the first alert wins; later ones change nothing)."""
        if self.triggered_at is None:
            self.triggered_at = int(alert.token_index)
            self.rule = getattr(alert, "rule", None)
        self.steering.active = True

    def reset(self) -> None:
        """Switch steering off again (e.g. before a new chat turn)."""
        self.steering.active = False
        self.triggered_at = None
        self.rule = None
