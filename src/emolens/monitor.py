"""Read emotions off the residual stream, token by token, and raise alerts on them.

One read-out function, :func:`readout`, is used everywhere (CLI, validation, the
streaming monitor), so their numbers cannot drift apart: the cosine (default) or raw
projection of each position's residual with every unit emotion vector, averaged over
the requested layers.
"""

from __future__ import annotations

import bisect
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from emolens import hooks
from emolens.errors import EmolensError, SteeringError

if TYPE_CHECKING:  # pragma: no cover
    from emolens.model import ModelAdapter as LanguageModel
    from emolens.vectors import EmotionVectors

MODES = ("cosine", "centered", "projection")

__all__ = ["MODES", "Alert", "AlertEngine", "AlertRule", "AllOf", "Readout", "Recorder",
           "monitor_layers", "parse_rule", "read", "read_many", "readout", "recording",
           "smooth"]


# ---- the maths (no model) ------------------------------------------------------------------
def readout(hidden: torch.Tensor, directions: torch.Tensor, mode: str = "cosine",
            center: torch.Tensor | None = None) -> torch.Tensor:
    """Scores [..., E] of residual activations [..., d] against unit directions [E, d].

    ``cosine`` (the default) and ``projection`` read the activation as it is;
    ``centered`` is the cosine of ``hidden - center``, where ``center`` [d] is the mean
    training activation over emotions stored in the vector file (the reference point
    the vectors were measured from, which removes the part every text shares).

    >>> h = torch.tensor([[3.0, 4.0]]); W = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> readout(h, W).tolist(), readout(h, W, "projection").tolist()
    ([[0.6000000238418579, 0.800000011920929]], [[3.0, 4.0]])
    >>> readout(h, W, "centered", center=torch.tensor([3.0, 0.0])).tolist()
    [[0.0, 1.0]]
    """
    if mode not in MODES:
        raise SteeringError(f"unknown read-out mode {mode!r}; use one of {', '.join(MODES)}")
    h = hidden.float()
    if mode == "centered":
        if center is None:
            raise SteeringError("the centered read-out needs the vector file's center")
        h = h - center.to(h.device, torch.float32)
    if mode != "projection":
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
    """Layers to read: ``layer`` (int, fraction, ``"a,b"``, list) or the file's default layer."""
    if layer is None:
        return [vectors.default_layer]
    wanted = lm.resolve_layers(layer)
    for i in wanted:
        vectors.matrix(i)  # raises LayerError naming the stored layers
    return wanted


def _direction_tensors(vectors: EmotionVectors, layers: Sequence[int],
                       device: torch.device | str = "cpu") -> dict[int, torch.Tensor]:
    return {i: torch.from_numpy(np.array(vectors.matrix(i), np.float32)).to(device)
            for i in layers}


def _centers(vectors: EmotionVectors, layers: Sequence[int], mode: str,
             device: torch.device | str = "cpu") -> dict[int, torch.Tensor | None]:
    """Per-layer center [d] for the centered read-out (None for the other modes)."""
    if mode not in MODES:
        raise SteeringError(f"unknown read-out mode {mode!r}; use one of {', '.join(MODES)}")
    if mode != "centered":
        return {i: None for i in layers}
    center = getattr(vectors, "center", None)
    if center is None:
        raise SteeringError("these vectors store no center (mean training activation); "
                            "rebuild them with a current emolens or use mode='cosine'")
    return {i: torch.from_numpy(np.array(center[vectors.layer_index(i)], np.float32)).to(device)
            for i in layers}


# ---- reading a finished text ---------------------------------------------------------------
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
    token_ids: list[int] = field(default_factory=list)

    def summary(self, top: int | None = None, start: int = 0) -> list[tuple[str, float]]:
        """Emotions ranked by their mean score over tokens ``start`` onward, highest first."""
        if len(self.scores[start:]) == 0:
            return []
        mean = self.scores[start:].mean(axis=0)
        order = np.argsort(-mean, kind="stable")[:top]
        return [(self.emotions[i], float(mean[i])) for i in order]

    def strongest(self) -> list[str]:
        """The top emotion at each token."""
        return [self.emotions[i] for i in self.scores.argmax(axis=1)]

    def at(self, position: int) -> dict[str, float]:
        """Every emotion's score at token ``position``."""
        return dict(zip(self.emotions, map(float, self.scores[position]), strict=True))

    def to_json(self, top: int = 10, start: int = 0) -> dict[str, Any]:
        """JSON-friendly: ``summary`` (ranked, highest first) and each token's top emotions."""
        order = np.argsort(-self.scores, axis=1, kind="stable")[:, :top]
        return {
            "layers": self.layers,
            "mode": self.mode,
            "n_tokens": len(self.tokens),
            "summary": [{"emotion": e, "score": round(s, 6)}
                        for e, s in self.summary(top, start)],
            "tokens": [
                {"token": tok, "offset": list(off),
                 "top": [{"emotion": self.emotions[j], "score": round(float(self.scores[t, j]), 6)}
                         for j in order[t]]}
                for t, (tok, off) in enumerate(zip(self.tokens, self.offsets, strict=True))
            ],
        }


def _tokenise(lm: LanguageModel, text: Any, add_generation_prompt: bool
              ) -> tuple[list[int], list[tuple[int, int]], str, int | None]:
    """ids, character offsets, rendered text and assistant_start of a text, chat or id list."""
    if isinstance(text, str):
        enc = lm.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]], text, None
    items = list(text)
    if not items:
        raise EmolensError("nothing to read: empty text")
    if all(isinstance(t, (int, np.integer)) for t in items):  # token ids
        ids = [int(t) for t in items]
        pieces = [lm.tokenizer.decode([t]) for t in ids]
        offsets, at = [], 0
        for p in pieces:
            offsets.append((at, at + len(p)))
            at += len(p)
        return ids, offsets, "".join(pieces), None
    chat = lm.encode_chat(items, add_generation_prompt=add_generation_prompt)
    a_start: int | None = chat.assistant_start if add_generation_prompt else None
    if not add_generation_prompt and items[-1].get("role") == "assistant":
        # the last token of the generation prompt before the final assistant message
        # (the same convention as LanguageModel.encode_chat)
        prefix = lm.format_chat(items[:-1], add_generation_prompt=True)
        if chat.text.startswith(prefix):
            before = [i for i, (_s, e) in enumerate(chat.offsets) if e <= len(prefix)]
            a_start = before[-1] if before else None
    return list(chat.input_ids), list(chat.offsets), chat.text, a_start


def read(lm: LanguageModel, text: str | Sequence[dict[str, str]] | Sequence[int],
         vectors: EmotionVectors, *, layer: Any = None, mode: str = "cosine", window: int = 1,
         add_generation_prompt: bool = False) -> Readout:
    """Per-token read-out of a raw text, a chat transcript (rendered with its template) or
    a list of token ids.

    For a chat ending with an assistant message, ``assistant_start`` is the last token
    of the generation prompt before that message.

    >>> r = lm.monitor("The dog ran off and I can't find him.", vecs)  # doctest: +SKIP
    >>> r.summary(3)  # doctest: +SKIP
    [('worried', 0.061), ('sad', 0.058), ('afraid', 0.055)]
    """
    return read_many(lm, [text], vectors, layer=layer, mode=mode, window=window,
                     add_generation_prompt=add_generation_prompt, batch_size=1)[0]


def read_many(lm: LanguageModel, texts: Sequence[Any], vectors: EmotionVectors, *,
              layer: Any = None, mode: str = "cosine", window: int = 1,
              add_generation_prompt: bool = False, batch_size: int = 8) -> list[Readout]:
    """:func:`read` for many texts, ``batch_size`` per forward (right padding, masked)."""
    layers = monitor_layers(lm, vectors, layer)
    dirs = _direction_tensors(vectors, layers, lm.device)
    centers = _centers(vectors, layers, mode, lm.device)
    encoded = [_tokenise(lm, t, add_generation_prompt) for t in texts]
    pad = lm.tokenizer.pad_token_id or 0
    out: list[Readout] = []
    for lo in range(0, len(encoded), max(1, batch_size)):
        chunk = encoded[lo:lo + max(1, batch_size)]
        width = max(len(ids) for ids, *_ in chunk)
        ids_t = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids_t)
        for r, (ids, *_rest) in enumerate(chunk):
            ids_t[r, :len(ids)] = torch.tensor(ids)
            mask[r, :len(ids)] = 1
        batch = {"input_ids": ids_t.to(lm.device), "attention_mask": mask.to(lm.device)}
        store = lm.residuals(batch, layers)
        scores = torch.stack([readout(store[i], dirs[i], mode, centers[i])
                              for i in layers]).mean(0)
        scores_np = scores.cpu().numpy()
        for r, (ids, offsets, rendered, a_start) in enumerate(chunk):
            out.append(Readout(
                tokens=[lm.tokenizer.decode([t]) for t in ids], offsets=offsets,
                emotions=tuple(vectors.emotions), layers=layers,
                scores=smooth(scores_np[r, :len(ids)], window), mode=mode,
                assistant_start=a_start, text=rendered, token_ids=list(ids)))
    return out


# ---- reading while the model runs ----------------------------------------------------------
class Recorder:
    """Scores of every position seen by the forwards run while :func:`recording` is open.

    Chunks stay on the model's device until asked for, so recording adds no host sync
    to a forward.  Positions are the columns of the (left-padded) batch.
    """

    def __init__(self, layers: Sequence[int]) -> None:
        self.layers = list(layers)
        self._per_layer: dict[int, list[torch.Tensor]] = {i: [] for i in self.layers}
        self._ends: list[int] = []  # cumulative width after each forward
        self._cache: np.ndarray | None = None

    def add(self, layer: int, scores: torch.Tensor) -> None:
        """Store one forward's scores [B, n, E] at ``layer``."""
        self._per_layer[layer].append(scores)
        if layer == self.layers[0]:
            self._ends.append((self._ends[-1] if self._ends else 0) + scores.shape[1])
        self._cache = None

    def length(self) -> int:
        """Positions recorded so far."""
        return self._ends[-1] if self._ends else 0

    def _chunk(self, k: int) -> torch.Tensor:
        parts = [self._per_layer[i][k] for i in self.layers]
        return parts[0] if len(parts) == 1 else torch.stack(parts).mean(0)

    def stacked(self) -> np.ndarray:
        """[B, positions, E] scores, averaged over the monitored layers."""
        if self._cache is None:
            n = min(len(c) for c in self._per_layer.values())
            if n == 0:
                raise EmolensError("nothing was recorded: no forward ran inside recording()")
            self._cache = torch.cat([self._chunk(k) for k in range(n)], dim=1).cpu().numpy()
        return self._cache

    def position(self, row: int, pos: int) -> np.ndarray:
        """Scores [E] of column ``pos`` of batch row ``row`` (reads one chunk only)."""
        k = bisect.bisect_right(self._ends, pos)
        if k >= len(self._ends) or pos < 0:
            raise IndexError(f"position {pos} not recorded (have {self.length()})")
        base = self._ends[k - 1] if k else 0
        return self._chunk(k)[row, pos - base].cpu().numpy()


@contextmanager
def recording(lm: LanguageModel, vectors: EmotionVectors, *, layer: Any = None,
              mode: str = "cosine") -> Iterator[Recorder]:
    """Record the read-out of every position processed by the model while open.

    >>> with recording(lm, vecs) as rec:  # doctest: +SKIP
    ...     lm.model(**lm.encode(["Hello there"]))
    >>> rec.stacked().shape  # doctest: +SKIP
    (1, 2, 171)
    """
    layers = monitor_layers(lm, vectors, layer)
    dirs = _direction_tensors(vectors, layers, lm.device)
    centers = _centers(vectors, layers, mode, lm.device)
    recorder = Recorder(layers)

    def reduce(i: int, hidden: torch.Tensor) -> None:
        recorder.add(i, readout(hidden, dirs[i], mode, centers[i]))

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
            suffix = f"@{self.window}" if self.window > 1 else ""
            self.name = f"{self.emotion}{op}{self.threshold:g}{suffix}"

    @classmethod
    def parse(cls, spec: str) -> AlertRule:
        """``EMOTION>THRESHOLD[@WINDOW]`` or ``EMOTION<THRESHOLD[@WINDOW]``."""
        body, _, win = spec.strip().partition("@")
        op = ">" if ">" in body else "<" if "<" in body else None
        if op is None:
            raise SteeringError(f"cannot read alert rule {spec!r}; write e.g. desperate>0.05@8")
        emotion, _, thr = body.partition(op)
        try:
            return cls(emotion.strip(), float(thr), int(win) if win else 1, op == "<",
                       spec.strip())
        except ValueError:
            raise SteeringError(f"cannot read alert rule {spec!r}; write e.g. "
                                "desperate>0.05@8") from None


@dataclass
class AllOf:
    """Fires when every rule in it holds at the same token (an AND of rules)."""

    rules: list[AlertRule]
    name: str = ""

    def __post_init__(self) -> None:
        if not self.rules:
            raise SteeringError("AllOf needs at least one rule")
        self.name = self.name or " & ".join(r.name for r in self.rules)


def parse_rule(spec: str) -> AlertRule | AllOf:
    """A rule from text; ``&`` joins rules that must hold together.

    >>> parse_rule("desperate>0.05@4 & calm<0").name
    'desperate>0.05@4 & calm<0'
    """
    parts = [p.strip() for p in spec.split("&") if p.strip()]
    if not parts:
        raise SteeringError(f"empty alert rule {spec!r}")
    if len(parts) == 1:
        return AlertRule.parse(parts[0])
    return AllOf([AlertRule.parse(p) for p in parts])


@dataclass
class Alert:
    """One rule firing: on which generated token, and the windowed mean that crossed."""

    rule: str
    token_index: int
    token: str
    value: float
    emotion: str = ""
    time: float = 0.0


@dataclass
class AlertEngine:
    """Evaluate rules on each new token's scores; call ``callback`` and append to a JSONL log.

    A rule fires on the token where its condition becomes true (rising edge), and can
    fire again only after it has been false.  A windowed rule needs ``window`` tokens
    before it can hold.

    >>> eng = AlertEngine(["calm", "sad"], [AlertRule("sad", 0.5, window=2)])
    >>> [len(eng.update(np.array([0.0, s]), i)) for i, s in enumerate([0.9, 0.0, 0.9, 0.9])]
    [0, 0, 0, 1]
    """

    emotions: Sequence[str]
    rules: list[AlertRule | AllOf]
    callback: Callable[[Alert], None] | None = None
    log_path: str | Path | None = None
    fired: list[Alert] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rules = [parse_rule(r) if isinstance(r, str) else r for r in self.rules]
        index = {e: i for i, e in enumerate(self.emotions)}
        for rule in self._leaves():
            if rule.emotion not in index:
                raise SteeringError(f"alert rule {rule.name!r}: unknown emotion {rule.emotion!r}")
        self._index = index
        self.reset()

    def reset(self) -> None:
        """Forget windows and rising-edge state (e.g. between chat turns); keep ``fired``."""
        # keyed by object identity: the same rule object inside two AllOfs is fed once
        self._history: dict[int, deque[float]] = {}
        self._active: dict[int, bool] = {}

    def _leaves(self) -> Iterator[AlertRule]:
        seen: set[int] = set()
        for r in self.rules:
            for leaf in (r.rules if isinstance(r, AllOf) else [r]):
                if id(leaf) not in seen:
                    seen.add(id(leaf))
                    yield leaf

    def _holds(self, rule: AlertRule, scores: np.ndarray) -> tuple[bool, float]:
        hist = self._history.setdefault(id(rule), deque(maxlen=rule.window))
        hist.append(float(scores[self._index[rule.emotion]]))
        mean = sum(hist) / len(hist)
        if len(hist) < rule.window:
            return False, mean
        return (mean < rule.threshold if rule.below else mean > rule.threshold), mean

    def update(self, scores: np.ndarray | torch.Tensor, token_index: int,
               token: str = "") -> list[Alert]:
        """Feed one token's scores [E]; return the alerts that fired on it."""
        if isinstance(scores, torch.Tensor):
            scores = scores.detach().float().cpu().numpy()
        leaf = {id(r): self._holds(r, scores) for r in self._leaves()}
        out = []
        for rule in self.rules:
            parts = rule.rules if isinstance(rule, AllOf) else [rule]
            holds = all(leaf[id(p)][0] for p in parts)
            if holds and not self._active.get(id(rule), False):
                alert = Alert(rule.name, int(token_index), token, leaf[id(parts[0])][1],
                              parts[0].emotion, time.time())
                out.append(alert)
                self._emit(alert)
            self._active[id(rule)] = holds
        return out

    def _emit(self, alert: Alert) -> None:
        self.fired.append(alert)
        if self.log_path is not None:
            # append-only: a crash loses at most the line being written
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(asdict(alert), ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        if self.callback is not None:
            self.callback(alert)
