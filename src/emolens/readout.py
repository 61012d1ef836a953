"""THE read path: emotion scores of residual activations, for every caller.

Per-token monitoring, streaming, ``emolens probe`` summaries, held-out classification,
the layer sweep, scenarios, intensity and speakers all score activations here, so their
numbers cannot drift apart.  Two things are read off a text:

* ``scores[t, e]`` — each token's activation against each emotion direction;
* ``pooled[e]`` — the mean activation over the pooled tokens (the same rule extraction
  pooled with: content tokens from the file's token skip on, never the attention sink,
  special or chat-template tokens; see :func:`emolens.hooks.pool_mask` and
  :meth:`~emolens.model.ModelAdapter.pool_exclude`) against each direction.
  :meth:`Readout.summary` ranks this, which is exactly the pooled classification that
  validation scores.

Modes: ``cosine`` of the activation; ``centered``, the cosine after subtracting the
vector file's training centre (the mean pooled activation over emotions, the point the
vectors were measured from); ``projection``, the raw dot product; ``lda``, the vector
file's calibrated read-out head (:mod:`emolens.head`: shrinkage LDA, Gaussian
log-likelihood of each emotion up to a shared term; it classifies text written elsewhere
better, see the README).  ``auto`` (the default) scores tokens ``centered`` when the file
stores a centre (else ``cosine``), so per-token scores, alerts and guards stay in the
study's units, and pools a text through the head when the file has one
(:func:`resolve_pooled_mode`): "which emotion is this text" is read by the read-out that
classifies text written elsewhere best.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from emolens import hooks
from emolens.errors import EmolensError, SteeringError

if TYPE_CHECKING:  # pragma: no cover
    from emolens.model import Input, ModelAdapter
    from emolens.vectors import EmotionVectors

MODES = ("auto", "cosine", "centered", "projection", "lda")
DEFAULT_TOKEN_SKIP = 50

__all__ = ["DEFAULT_TOKEN_SKIP", "MODES", "Reader", "Readout", "Recorder", "pooled_scores",
           "read", "read_layers", "read_many", "recording", "resolve_mode", "resolve_pooled_mode",
           "score", "smooth"]


# ---- the maths (no model) ------------------------------------------------------------------
def score(hidden: torch.Tensor, directions: torch.Tensor, mode: str = "cosine",
          center: torch.Tensor | None = None, bias: torch.Tensor | None = None
          ) -> torch.Tensor:
    """Scores [..., E] of activations [..., d] against unit directions [E, d].

    Mode ``lda`` takes a head's weights [E, d] as ``directions`` and its ``bias`` [E]:
    ``(h - center) @ weights.T + bias``.

    >>> h = torch.tensor([[3.0, 4.0]]); W = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> score(h, W).tolist(), score(h, W, "projection").tolist()
    ([[0.6000000238418579, 0.800000011920929]], [[3.0, 4.0]])
    >>> score(h, W, "centered", center=torch.tensor([3.0, 0.0])).tolist()
    [[0.0, 1.0]]
    >>> score(h, W, "lda", center=torch.tensor([3.0, 0.0]), bias=torch.tensor([1.0, 0.0])).tolist()
    [[1.0, 4.0]]
    """
    if mode not in ("cosine", "centered", "projection", "lda"):
        raise SteeringError(f"unknown read-out mode {mode!r}; use one of {', '.join(MODES)}")
    h = hidden.float()
    if mode in ("centered", "lda"):
        if center is None:
            raise SteeringError(f"the {mode} read-out needs the vector file's center")
        h = h - center.to(h.device, torch.float32)
    if mode in ("cosine", "centered"):
        h = F.normalize(h, dim=-1)
    out = h @ directions.to(h.device, torch.float32).T
    if mode == "lda":
        if bias is None:
            raise SteeringError("the lda read-out needs the head's bias")
        out = out + bias.to(h.device, torch.float32)
    return out


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


def resolve_pooled_mode(vectors: EmotionVectors, mode: str = "auto") -> str:
    """The mode of pooled (whole-text) read-outs: ``auto`` -> ``lda`` if the file has a head.

    >>> resolve_pooled_mode(vecs), resolve_pooled_mode(vecs, "cosine")
    ('centered', 'cosine')
    """
    if mode == "auto" and vectors.head is not None and vectors.center is not None:
        return "lda"
    return resolve_mode(vectors, mode)


def resolve_mode(vectors: EmotionVectors, mode: str = "auto") -> str:
    """``auto`` -> ``centered`` when the file stores a training centre, else ``cosine``.

    >>> resolve_mode(vecs), resolve_mode(vecs, "projection")
    ('centered', 'projection')
    """
    if mode not in MODES:
        raise SteeringError(f"unknown read-out mode {mode!r}; use one of {', '.join(MODES)}")
    if mode == "auto":
        return "centered" if vectors.center is not None else "cosine"
    if mode in ("centered", "lda") and vectors.center is None:
        raise SteeringError("these vectors store no center (mean training activation); "
                            "rebuild them with a current emolens or use mode='cosine'")
    if mode == "lda" and vectors.head is None:
        raise SteeringError("this vector file has no read-out head; rebuild it with a current "
                            "emolens (emolens extract) or use mode='centered'")
    return mode


class Reader:
    """A read-out compiled for some layers: direction (and centre) tensors on one device.

    >>> r = Reader(vecs, [1, 2])
    >>> r.mode, r.layers, r.scores(1, torch.zeros(3, vecs.d)).shape
    ('centered', [1, 2], torch.Size([3, 6]))
    """

    def __init__(self, vectors: EmotionVectors, layers: Sequence[int], mode: str = "auto",
                 device: torch.device | str = "cpu",
                 emotions: Sequence[str] | None = None) -> None:
        self.mode = resolve_mode(vectors, mode)
        self.layers = [int(i) for i in layers]
        self.emotions = tuple(emotions) if emotions is not None else tuple(vectors.emotions)
        self.device = torch.device(device)
        rows = [vectors.index(e) for e in self.emotions]

        def tensor(x: np.ndarray) -> torch.Tensor:
            return torch.tensor(np.asarray(x, dtype=np.float32), device=device)

        self._bias: dict[int, torch.Tensor | None] = dict.fromkeys(self.layers)
        head = vectors.head
        if self.mode == "lda" and head is not None:  # resolve_mode made sure of the head
            parts = {i: head.at(i) for i in self.layers}
            self._dirs = {i: tensor(w[rows]) for i, (w, _b) in parts.items()}
            self._bias = {i: tensor(b[rows]) for i, (_w, b) in parts.items()}
        else:
            self._dirs = {i: tensor(vectors.matrix(i)[rows]) for i in self.layers}
        self._centers: dict[int, torch.Tensor | None] = {
            i: (tensor(vectors.center[vectors.layer_index(i)])
                if self.mode in ("centered", "lda") else None)
            for i in self.layers}

    def scores(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """[..., E] scores of activations [..., d] taken at ``layer``."""
        return score(hidden, self._dirs[layer], self.mode, self._centers[layer],
                     self._bias[layer])

    def combine(self, per_layer: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """Scores averaged over this reader's layers, from ``{layer: activations}``."""
        # gathered onto one device first: under device_map="auto" layers live on several
        parts = [self.scores(i, per_layer[i]).to(self.device) for i in self.layers]
        return parts[0] if len(parts) == 1 else torch.stack(parts).mean(0)


def read_layers(lm: ModelAdapter, vectors: EmotionVectors, layer: Any = None) -> list[int]:
    """Layers to read: ``layer`` (int, fraction, ``"a,b"``, list) or the file's default layer.

    >>> read_layers(lm, vecs), read_layers(lm, vecs, "1,3")
    ([2], [1, 3])
    """
    vectors.check_model(lm)
    if layer is None:
        return [vectors.default_layer]
    wanted = lm.resolve_layers(layer)
    for i in wanted:
        vectors.layer_index(i)  # raises LayerError naming the stored layers
    return wanted


# ---- reading a finished text ---------------------------------------------------------------
@dataclass
class Readout:
    """The read-out of one text: ``scores[t, e]`` per token and ``pooled[e]`` for the text.

    ``pool_start`` is the first pooled token (tokens before it — the attention sink and
    the skipped tokens — are shown but not pooled; so are special and template tokens).
    ``mode`` scored the tokens, ``pooled_mode`` the pooled read-out (they differ under
    ``auto`` when the file has a read-out head: see :func:`resolve_pooled_mode`).
    """

    tokens: list[str]
    offsets: list[tuple[int, int]]
    emotions: tuple[str, ...]
    layers: list[int]
    scores: np.ndarray
    pooled: np.ndarray
    pool_start: int = 0
    mode: str = "cosine"
    assistant_start: int | None = None
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    pooled_mode: str = ""

    def summary(self, top: int | None = None) -> list[tuple[str, float]]:
        """Emotions ranked by the pooled read-out, highest first (validation's classification).

        >>> r = lm.monitor("The rain would not stop and the roof leaked.", vecs)
        >>> [e for e, _ in r.summary(2)] == [vecs.emotions[i] for i in (-r.pooled).argsort()[:2]]
        True
        """
        return _ranked(self.emotions, self.pooled, top)

    def ranked_at(self, position: int, top: int | None = None) -> list[tuple[str, float]]:
        """Emotions ranked by their score at token ``position`` (e.g. ``assistant_start``)."""
        return _ranked(self.emotions, self.scores[position], top)

    def strongest(self) -> list[str]:
        """The top emotion at each token."""
        return [self.emotions[i] for i in self.scores.argmax(axis=1)]

    def at(self, position: int) -> dict[str, float]:
        """Every emotion's score at token ``position``."""
        return dict(zip(self.emotions, map(float, self.scores[position]), strict=True))

    def to_json(self, top: int = 10, at: int | None = None) -> dict[str, Any]:
        """JSON-friendly: ``summary`` (ranked; at token ``at`` if given) and each token's top."""
        order = np.argsort(-self.scores, axis=1, kind="stable")[:, :top]
        ranked = self.summary(top) if at is None else self.ranked_at(at, top)
        return {
            "layers": self.layers,
            "mode": self.mode,
            "pooled_mode": self.pooled_mode or self.mode,
            "n_tokens": len(self.tokens),
            "pool_start": self.pool_start,
            "assistant_start": self.assistant_start,
            "summary_at": "pooled" if at is None else at,
            "summary": [{"emotion": e, "score": round(s, 6)} for e, s in ranked],
            "tokens": [
                {"token": tok, "offset": list(off),
                 "top": [{"emotion": self.emotions[j], "score": round(float(self.scores[t, j]), 6)}
                         for j in order[t]]}
                for t, (tok, off) in enumerate(zip(self.tokens, self.offsets, strict=True))
            ],
        }


def _ranked(emotions: Sequence[str], values: np.ndarray, top: int | None
            ) -> list[tuple[str, float]]:
    order = np.argsort(-values, kind="stable")[:top]
    return [(emotions[i], float(values[i])) for i in order]


def read(lm: ModelAdapter, text: Input, vectors: EmotionVectors, *, layer: Any = None,
         mode: str = "auto", window: int = 1, add_generation_prompt: bool = False,
         token_skip: int | None = None) -> Readout:
    """Read one text, chat (rendered with its template) or list of token ids.

    >>> r = read(lm, "The dog ran off and I can't find him.", vecs)
    >>> r.scores.shape == (len(r.tokens), len(vecs)), r.pooled.shape
    (True, (6,))
    """
    return read_many(lm, [text], vectors, layer=layer, mode=mode, window=window,
                     add_generation_prompt=add_generation_prompt, batch_size=1,
                     token_skip=token_skip)[0]


def read_many(lm: ModelAdapter, texts: Sequence[Input], vectors: EmotionVectors, *,
              layer: Any = None, mode: str = "auto", window: int = 1,
              add_generation_prompt: bool = False, batch_size: int = 8,
              token_skip: int | None = None, emotions: Sequence[str] | None = None,
              progress: Any = None) -> list[Readout]:
    """:func:`read` for many inputs, ``batch_size`` per forward (right padding, masked).

    ``token_skip`` defaults to the vector file's (the tokens extraction skipped);
    ``progress`` is called with the number of texts done after each batch.

    >>> rs = read_many(lm, ["Hello there.", [{"role": "user", "content": "Hi"}]], vecs,
    ...                add_generation_prompt=True)
    >>> [r.assistant_start is not None for r in rs]
    [False, True]
    """
    if window < 1:
        raise EmolensError(f"window must be >= 1, got {window}")
    layers = read_layers(lm, vectors, layer)
    reader = Reader(vectors, layers, mode, lm.device, emotions)
    pooled_mode = resolve_pooled_mode(vectors, mode)
    pooler = reader if pooled_mode == reader.mode else Reader(vectors, layers, pooled_mode,
                                                              lm.device, emotions)
    skip = int(vectors.meta.get("token_skip", DEFAULT_TOKEN_SKIP) if token_skip is None
               else token_skip)
    out: list[Readout] = []
    step = max(1, int(batch_size))
    for lo in range(0, len(texts), step):
        batch, encoded = lm.batch(texts[lo:lo + step], side="right",
                                  add_generation_prompt=add_generation_prompt)
        store = lm.residuals(batch, layers)
        per_token = reader.combine(store).cpu().numpy()
        mask = hooks.pool_mask(batch["attention_mask"], skip,
                               lm.pool_exclude(batch, encoded))
        pooled = pooler.combine({i: hooks.pooled_mean(store[i], mask)
                                 for i in layers}).cpu().numpy()
        starts = mask.float().argmax(-1).tolist()
        # one batched (Rust-side) decode of every token of the batch: decoding them one by
        # one in Python was most of the time of a pooled-only read
        pieces = lm.tokenizer.batch_decode([[t] for e in encoded for t in e.input_ids])
        at = 0
        for r, enc in enumerate(encoded):
            n = len(enc.input_ids)
            tokens, at = pieces[at:at + n], at + n
            out.append(Readout(
                tokens=tokens, offsets=enc.offsets,
                emotions=reader.emotions, layers=layers,
                scores=smooth(per_token[r, :n], window), pooled=pooled[r],
                pool_start=int(starts[r]), mode=reader.mode,
                assistant_start=enc.assistant_start, text=enc.text,
                token_ids=list(enc.input_ids), pooled_mode=pooler.mode))
        if progress is not None:
            progress(len(encoded))
    return out


def pooled_scores(lm: ModelAdapter, texts: Sequence[Input], vectors: EmotionVectors, *,
                  layer: Any = None, mode: str = "auto", batch_size: int = 16,
                  token_skip: int | None = None, emotions: Sequence[str] | None = None
                  ) -> np.ndarray:
    """[N, E] pooled read-out of many texts: what ``probe`` summaries rank and validation scores.

    >>> pooled_scores(lm, ["One.", "Two words."], vecs).shape
    (2, 6)
    """
    reads = read_many(lm, texts, vectors, layer=layer, mode=mode, batch_size=batch_size,
                      token_skip=token_skip, emotions=emotions)
    return np.stack([r.pooled for r in reads]).astype(np.float64)


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
def recording(lm: ModelAdapter, vectors: EmotionVectors, *, layer: Any = None,
              mode: str = "auto") -> Iterator[Recorder]:
    """Record the read-out of every position processed by the model while open.

    >>> with recording(lm, vecs) as rec:
    ...     _ = lm.forward(lm.pad([lm.encode_input("Hello there").input_ids]))
    >>> rec.stacked().shape[0], rec.stacked().shape[2]
    (1, 6)
    """
    layers = read_layers(lm, vectors, layer)
    reader = Reader(vectors, layers, mode, lm.device)
    recorder = Recorder(layers)

    def reduce(i: int, hidden: torch.Tensor) -> None:
        recorder.add(i, reader.scores(i, hidden).to(reader.device))

    with hooks.capture(lm.layer_modules(layers), reduce=reduce):
        yield recorder
