"""What the analyses share: the layer check, emotion checks, number formats, and
:func:`read_scores`, the one function through which every experiment turns activations
into emotion scores.

>>> scores = read_scores(lm, vecs, [lm.encode_input("Hi there").input_ids], 2,
...                      positions=[[0, 1]])
>>> scores[0].shape
(2, 6)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emolens.errors import EmolensError, VectorFileError
from emolens.readout import DEFAULT_TOKEN_SKIP, pooled_scores, read_many

if TYPE_CHECKING:  # pragma: no cover
    from emolens.lens import LanguageModel
    from emolens.vectors import EmotionVectors

__all__ = [
    "directions",
    "fmt",
    "fmt_p",
    "read_at_assistant_start",
    "read_scores",
    "require_emotions",
    "resolve_layer",
    "token_skip",
    "user_chat",
]


def fmt(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or ``n/a`` for None, NaN and infinities.

    >>> fmt(0.12345), fmt(float("nan"))
    ('0.123', 'n/a')
    """
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def fmt_p(p: float) -> str:
    """A p-value as the summaries print it.

    >>> fmt_p(0.0001), fmt_p(0.0412)
    ('< 0.001', '0.0412')
    """
    if not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def user_chat(message: str) -> list[dict[str, str]]:
    """A one-turn chat with ``message`` from the user.

    >>> user_chat("Hi")
    [{'role': 'user', 'content': 'Hi'}]
    """
    return [{"role": "user", "content": message}]


def require_emotions(vectors: EmotionVectors, names: Sequence[str], what: str) -> list[str]:
    """``names`` as a list, or VectorFileError naming those the vector file lacks.

    >>> require_emotions(vecs, ["calm", "happy"], "a check")
    ['calm', 'happy']
    """
    missing = [e for e in names if e not in vectors]
    if missing:
        raise VectorFileError(f"{what} needs the emotion(s) {', '.join(missing)}, which this "
                              "vector file lacks")
    return list(names)


def resolve_layer(lm: LanguageModel, vectors: EmotionVectors, layer: Any = None) -> int:
    """The layer to read: ``layer`` (int, fraction, ``"0.66"``) or the file's default layer.

    Raises LayerError when the file has no vectors there, VectorFileError when the vectors
    were built for another model (another width, depth or fingerprint).

    >>> resolve_layer(lm, vecs), resolve_layer(lm, vecs, 1), resolve_layer(lm, vecs, "0.5")
    (2, 1, 2)
    """
    vectors.check_model(lm)  # VectorFileError naming both models
    i = vectors.default_layer if layer is None else lm.resolve_layer(layer)
    lm.resolve_layer(i)  # in range for this model
    vectors.matrix(i)  # LayerError naming the stored layers
    return i


def directions(vectors: EmotionVectors, layer: int, names: Sequence[str],
               device: torch.device | str = "cpu") -> torch.Tensor:
    """The unit vectors ``[len(names), d]`` (float32) of ``names`` at ``layer``.

    >>> directions(vecs, 2, ["calm", "sad"]).shape
    torch.Size([2, 32])
    """
    idx = [vectors.index(e) for e in names]
    mat = np.ascontiguousarray(vectors.matrix(layer)[idx], dtype=np.float32)
    return torch.from_numpy(mat).to(device)


def token_skip(vectors: EmotionVectors) -> int:
    """How many leading tokens of each text the pooled read-out skips: the file's own
    ``token_skip`` (the value its vectors were built with), else the read path's default.

    >>> token_skip(vecs)
    0
    """
    return int(vectors.meta.get("token_skip", DEFAULT_TOKEN_SKIP))


def read_scores(lm: LanguageModel, vectors: EmotionVectors, inputs: Sequence[Any], layer: int,
                emotions: Sequence[str] | None = None, *,
                positions: Sequence[Sequence[int]] | None = None, batch_size: int = 16,
                mode: str = "auto", cache: dict[Any, Any] | None = None
                ) -> list[np.ndarray]:
    """Emotion scores of inputs at ``layer``: the experiments' one read-out.

    Every analysis that turns activations into scores calls this function, and it calls
    :mod:`emolens.readout` (the project's one read path, the one ``probe`` and ``monitor``
    use), so validation and monitoring cannot drift apart.

    * ``positions`` given: ``inputs`` are token-id rows (or texts, chats) and the result for
      input ``i`` is ``[len(positions[i]), E]``: the per-token read-out at those positions.
    * ``positions=None``: the result for input ``i`` is its pooled read-out ``[E]`` (the mean
      activation from the file's ``token_skip`` on, as extraction pooled it), which is what
      ``probe`` summaries rank.

    ``emotions`` picks and orders the columns (default: every emotion of the file);
    ``mode`` is the read path's (``auto``: centred on the file's training centre when it
    stores one, else cosine). ``cache`` (a dict the caller owns, such as
    :attr:`~emolens.experiments.registry.Context.cache`) remembers pooled read-outs of texts,
    so analyses of one run that read the same texts (held-out and out-of-style both read the
    held-out split) run the model once.

    >>> [s.shape for s in read_scores(lm, vecs, ["A calm day.", "Run!"], 2, ["calm", "sad"])]
    [(2,), (2,)]
    >>> memo = {}
    >>> a = read_scores(lm, vecs, ["A calm day."], 2, cache=memo)
    >>> b = read_scores(lm, vecs, ["Run!", "A calm day."], 2, cache=memo)
    >>> bool((a[0] == b[1]).all()), sum(len(v) for v in memo.values())
    (True, 2)
    """
    if cache is not None and positions is None and all(isinstance(x, str) for x in inputs):
        return _read_pooled_cached(lm, vectors, list(inputs), layer, emotions,
                                   batch_size=batch_size, mode=mode, cache=cache)
    names = list(emotions) if emotions is not None else list(vectors.emotions)
    step = max(1, int(batch_size))
    items = list(inputs)
    if positions is not None and len(items) != len(positions):
        raise EmolensError(f"{len(items)} inputs but {len(positions)} position lists")
    if not items:
        return []
    # inputs of similar length share a batch (less padding: about twice as fast on stories)
    order = sorted(range(len(items)), key=lambda i: _length(items[i]))
    batch = [items[i] for i in order]
    out: list[np.ndarray] = [np.zeros(0)] * len(items)
    if positions is None:
        pooled = pooled_scores(lm, batch, vectors, layer=layer, mode=mode, batch_size=step,
                               emotions=names)
        for i, row in zip(order, pooled, strict=True):
            out[i] = np.asarray(row, dtype=np.float64)
        return out
    reads = read_many(lm, batch, vectors, layer=layer, mode=mode, batch_size=step,
                      emotions=names)
    for i, r in zip(order, reads, strict=True):
        pos = list(positions[i])
        bad = [p for p in pos if not 0 <= p < len(r.tokens)]
        if bad:
            raise EmolensError(f"positions {bad} are outside an input of {len(r.tokens)} tokens")
        out[i] = np.asarray(r.scores[pos], dtype=np.float64)
    return out


def _read_pooled_cached(lm: LanguageModel, vectors: EmotionVectors, texts: list[str],
                        layer: int, emotions: Sequence[str] | None, *, batch_size: int,
                        mode: str, cache: dict[Any, Any]) -> list[np.ndarray]:
    """:func:`read_scores` of pooled texts through ``cache``: one entry per (model, vectors,
    layer, mode, columns), each mapping a text to its row; only unseen texts are read."""
    names = tuple(emotions) if emotions is not None else tuple(vectors.emotions)
    seen = cache.setdefault(("pooled", id(lm), id(vectors), int(layer), str(mode), names), {})
    todo = list(dict.fromkeys(t for t in texts if t not in seen))
    for text, row in zip(todo, read_scores(lm, vectors, todo, layer, names,
                                           batch_size=batch_size, mode=mode), strict=True):
        seen[text] = row
    return [seen[t] for t in texts]


def _length(item: Any) -> int:
    """A cheap size for batching: tokens of an id row, characters of a text or chat."""
    if isinstance(item, str):
        return len(item)
    if item and all(isinstance(x, int | np.integer) for x in item):
        return len(item)
    return sum(len(str(m.get("content", ""))) for m in item if isinstance(m, dict))


def read_at_assistant_start(lm: LanguageModel, vectors: EmotionVectors,
                            messages: Sequence[str], layer: int, emotions: Sequence[str],
                            batch_size: int = 16, mode: str = "auto") -> np.ndarray:
    """Scores ``[len(messages), E]`` at ``assistant_start`` of one user turn per message,
    with the read-out ``mode``.

    >>> read_at_assistant_start(lm, vecs, ["Hi", "Bye"], 2, ["calm", "sad"]).shape
    (2, 2)
    >>> read_at_assistant_start(lm, vecs, [], 2, ["calm"], mode="cosine").shape
    (0, 1)
    """
    if not messages:
        return np.zeros((0, len(emotions)))
    encs = [lm.encode_chat(user_chat(m), add_generation_prompt=True) for m in messages]
    got = read_scores(lm, vectors, [e.input_ids for e in encs], layer, emotions,
                      positions=[[e.assistant_start] for e in encs], batch_size=batch_size,
                      mode=mode)
    return np.stack([g[0] for g in got])
