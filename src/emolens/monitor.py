"""Read emotions off the residual stream, token by token, and raise alerts on them.

One read-out function, :func:`readout`, is used everywhere (CLI, validation, the
streaming monitor), so their numbers cannot drift apart: the cosine (default) or raw
projection of each position's residual with every unit emotion vector, averaged over
the requested layers.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from emolens import hooks
from emolens.errors import SteeringError

if TYPE_CHECKING:  # pragma: no cover
    from emolens.model import LanguageModel
    from emolens.vectors import EmotionVectors

MODES = ("cosine", "projection")


def readout(hidden: torch.Tensor, directions: torch.Tensor, mode: str = "cosine") -> torch.Tensor:
    """Scores [..., E] of residual activations [..., d] against unit directions [E, d].

    >>> h = torch.tensor([[3.0, 4.0]]); W = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> readout(h, W).tolist(), readout(h, W, "projection").tolist()
    ([[0.6000000238418579, 0.800000011920929]], [[3.0, 4.0]])
    """
    if mode not in MODES:
        raise SteeringError(f"unknown read-out mode {mode!r}; use cosine or projection")
    h = hidden.float()
    if mode == "cosine":
        h = F.normalize(h, dim=-1)
    return h @ directions.to(h.device, torch.float32).T


def smooth(scores: np.ndarray, window: int) -> np.ndarray:
    """Causal moving average over the last ``window`` tokens (window <= 1: unchanged).

    >>> smooth(np.array([[0.0], [2.0], [4.0]]), 2)[:, 0].tolist()
    [0.0, 1.0, 3.0]
    """
    if window <= 1 or len(scores) == 0:
        return scores
    csum = np.cumsum(np.vstack([np.zeros((1, scores.shape[1])), scores]), axis=0)
    idx = np.arange(1, len(scores) + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)[:, None]


def monitor_layers(lm: LanguageModel, vectors: EmotionVectors, layer: Any = None) -> list[int]:
    """Layers to read: ``layer`` (int, fraction, list) or the file's default layer."""
    if layer is None:
        return [vectors.default_layer]
    wanted = lm.resolve_layers(layer) if not isinstance(layer, list) else layer
    for i in wanted:
        vectors.matrix(i)  # raises LayerError naming the stored layers
    return list(wanted)


def _direction_tensors(vectors: EmotionVectors, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    return {i: torch.from_numpy(np.ascontiguousarray(vectors.matrix(i))) for i in layers}


@dataclass
class Readout:
    """Per-token emotion scores of one text: ``scores[t, e]``."""

    tokens: list[str]
    offsets: list[tuple[int, int]]
    emotions: tuple[str, ...]
    layers: list[int]
    scores: np.ndarray
    mode: str = "cosine"
    assistant_start: int | None = None
    text: str = ""

    def summary(self, top: int | None = None, start: int = 0) -> list[tuple[str, float]]:
        """Emotions ranked by their mean score over tokens ``start`` onward."""
        mean = self.scores[start:].mean(axis=0)
        order = np.argsort(-mean)[:top]
        return [(self.emotions[i], float(mean[i])) for i in order]

    def strongest(self) -> list[str]:
        """The top emotion at each token."""
        return [self.emotions[i] for i in self.scores.argmax(axis=1)]

    def at(self, position: int) -> dict[str, float]:
        return dict(zip(self.emotions, map(float, self.scores[position]), strict=True))

    def to_json(self, top: int = 10) -> dict[str, Any]:
        order = np.argsort(-self.scores, axis=1)[:, :top]
        return {
            "layers": self.layers,
            "mode": self.mode,
            "summary": [{"emotion": e, "score": round(s, 6)} for e, s in self.summary(top)],
            "tokens": [
                {"token": tok, "offset": list(off),
                 "top": [{"emotion": self.emotions[j], "score": round(float(self.scores[t, j]), 6)}
                         for j in order[t]]}
                for t, (tok, off) in enumerate(zip(self.tokens, self.offsets, strict=True))
            ],
        }


def read(lm: LanguageModel, text: str | Sequence[dict[str, str]], vectors: EmotionVectors, *,
         layer: Any = None, mode: str = "cosine", window: int = 1,
         add_generation_prompt: bool = False) -> Readout:
    """Per-token read-out of a raw text or a chat transcript (rendered with its template).

    >>> r = lm.monitor("The dog ran off and I can't find him.", vecs)  # doctest: +SKIP
    >>> r.summary(3)  # doctest: +SKIP
    [('worried', 0.061), ('sad', 0.058), ('afraid', 0.055)]
    """
    layers = monitor_layers(lm, vectors, layer)
    if isinstance(text, str):
        enc = lm.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        ids, offsets, rendered, a_start = enc["input_ids"], enc["offset_mapping"], text, None
    else:
        chat = lm.encode_chat(text, add_generation_prompt=add_generation_prompt)
        ids, offsets, rendered = chat.input_ids, chat.offsets, chat.text
        a_start = chat.assistant_start if add_generation_prompt else None
    batch = {"input_ids": torch.tensor([ids], device=lm.device),
             "attention_mask": torch.ones(1, len(ids), dtype=torch.long, device=lm.device)}
    dirs = _direction_tensors(vectors, layers)
    store = lm.residuals(batch, layers)
    scores = torch.stack([readout(store[i][0], dirs[i], mode) for i in layers]).mean(0)
    return Readout(
        tokens=[lm.tokenizer.decode([t]) for t in ids], offsets=[tuple(o) for o in offsets],
        emotions=vectors.emotions, layers=layers,
        scores=smooth(scores.cpu().numpy(), window), mode=mode, assistant_start=a_start,
        text=rendered)


class Recorder:
    """Scores of every position seen by the forwards run while :func:`recording` is open."""

    def __init__(self, n_layers: int) -> None:
        self._per_layer: dict[int, list[torch.Tensor]] = {}
        self._n_layers = n_layers
        self._cache: np.ndarray | None = None

    def add(self, layer: int, scores: torch.Tensor) -> None:
        self._per_layer.setdefault(layer, []).append(scores)
        self._cache = None

    def length(self) -> int:
        first = next(iter(self._per_layer.values()), [])
        return sum(s.shape[1] for s in first)

    def stacked(self) -> np.ndarray:
        """[B, positions, E] scores, averaged over the monitored layers."""
        if self._cache is None:
            per_layer = [torch.cat(chunks, dim=1) for chunks in self._per_layer.values()]
            self._cache = torch.stack(per_layer).mean(0).cpu().numpy()
        return self._cache

    def position(self, row: int, pos: int) -> np.ndarray:
        # read only the chunk holding ``pos``: no concatenation on the streaming hot path
        chunks = [c for c in zip(*self._per_layer.values(), strict=True)]
        base = 0
        for group in chunks:
            width = group[0].shape[1]
            if pos < base + width:
                return torch.stack([g[row, pos - base] for g in group]).mean(0).cpu().numpy()
            base += width
        raise IndexError(pos)


@contextmanager
def recording(lm: LanguageModel, vectors: EmotionVectors, *, layer: Any = None,
              mode: str = "cosine") -> Iterator[Recorder]:
    """Record the read-out of every position processed by the model while open."""
    layers = monitor_layers(lm, vectors, layer)
    dirs = {i: d.to(lm.device) for i, d in _direction_tensors(vectors, layers).items()}
    recorder = Recorder(len(layers))

    def reduce(i: int, hidden: torch.Tensor) -> None:
        recorder.add(i, readout(hidden, dirs[i], mode))

    with hooks.capture(lm.layer_modules(layers), reduce=reduce):
        yield recorder


# ---- alert rules ---------------------------------------------------------------------------
@dataclass
class AlertRule:
    """Fire when the mean score of ``emotion`` over the last ``window`` tokens exceeds
    ``threshold`` (or falls below it with ``below=True``).

    >>> AlertRule.parse("desperate>0.05@8")
    AlertRule(emotion='desperate', threshold=0.05, window=8, below=False, name='desperate>0.05@8')
    """

    emotion: str
    threshold: float
    window: int = 1
    below: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        if self.window < 1:
            raise SteeringError(f"alert window must be >= 1, got {self.window}")
        if not self.name:
            op = "<" if self.below else ">"
            self.name = f"{self.emotion}{op}{self.threshold:g}@{self.window}"

    @classmethod
    def parse(cls, spec: str) -> AlertRule:
        """``EMOTION>THRESHOLD[@WINDOW]`` or ``EMOTION<THRESHOLD[@WINDOW]``."""
        body, _, win = spec.partition("@")
        op = ">" if ">" in body else "<" if "<" in body else None
        if op is None:
            raise SteeringError(f"cannot read alert rule {spec!r}; write e.g. desperate>0.05@8")
        emotion, _, thr = body.partition(op)
        try:
            return cls(emotion.strip(), float(thr), int(win) if win else 1, op == "<", spec)
        except ValueError:
            raise SteeringError(f"cannot read alert rule {spec!r}") from None


@dataclass
class AllOf:
    """Fires when every rule in it holds at the same token (an AND of rules)."""

    rules: list[AlertRule]
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or " & ".join(r.name for r in self.rules)


@dataclass
class Alert:
    rule: str
    token_index: int
    token: str
    value: float


@dataclass
class AlertEngine:
    """Evaluate rules on each new token's scores; call ``callback`` and append to a JSONL log.

    A rule fires on the token where its condition becomes true (rising edge), and can
    fire again only after it has been false.
    """

    emotions: Sequence[str]
    rules: list[AlertRule | AllOf]
    callback: Callable[[Alert], None] | None = None
    log_path: str | Path | None = None
    fired: list[Alert] = field(default_factory=list)

    def __post_init__(self) -> None:
        index = {e: i for i, e in enumerate(self.emotions)}
        for rule in self._leaves():
            if rule.emotion not in index:
                raise SteeringError(f"alert rule {rule.name!r}: unknown emotion {rule.emotion!r}")
        self._index = index
        self._history: dict[str, deque[float]] = {}
        self._active: dict[str, bool] = {}

    def _leaves(self) -> Iterator[AlertRule]:
        for r in self.rules:
            yield from (r.rules if isinstance(r, AllOf) else [r])

    def _holds(self, rule: AlertRule, scores: np.ndarray) -> tuple[bool, float]:
        hist = self._history.setdefault(rule.name, deque(maxlen=rule.window))
        hist.append(float(scores[self._index[rule.emotion]]))
        mean = sum(hist) / len(hist)
        full = len(hist) == rule.window
        return full and (mean < rule.threshold if rule.below else mean > rule.threshold), mean

    def update(self, scores: np.ndarray, token_index: int, token: str = "") -> list[Alert]:
        """Feed one token's scores [E]; return the alerts that fired on it."""
        leaf = {r.name: self._holds(r, scores) for r in self._leaves()}
        out = []
        for rule in self.rules:
            parts = rule.rules if isinstance(rule, AllOf) else [rule]
            holds = all(leaf[p.name][0] for p in parts)
            if holds and not self._active.get(rule.name, False):
                alert = Alert(rule.name, token_index, token, leaf[parts[0].name][1])
                out.append(alert)
                self._emit(alert)
            self._active[rule.name] = holds
        return out

    def _emit(self, alert: Alert) -> None:
        self.fired.append(alert)
        if self.callback is not None:
            self.callback(alert)
        if self.log_path is not None:
            # append-only: a crash loses at most the line being written
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(alert.__dict__) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
