"""From sufficient statistics to emotion vectors (pure numpy, paper-spec section 4).

Emotion mean minus the mean over emotions; the top principal components of neutral text that
explain ``variance`` of its variance projected out; then unit norm. The neutral statistics
also give each layer's residual-stream norm, the unit of steering strength.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens import fileformat
from emolens.errors import CorpusError, EmolensError, LayerError, VectorFileError
from emolens.extract.scatter import ScatterStats
from emolens.extract.stats import NeutralStats, StoryStats
from emolens.fileformat import format_layers
from emolens.head import ReadoutHead, choose_shrinkage, lda_weights
from emolens.modelcheck import MODEL_KEYS, check_model, model_fingerprint
from emolens.vectors import EmotionVectors

if TYPE_CHECKING:  # pragma: no cover
    from emolens.extract.shards import Extraction

__all__ = ["DEFAULT_SHRINKAGE", "DEFAULT_VARIANCE", "build_vectors", "fit_head", "neutral_pcs",
           "vectors_from"]

logger = logging.getLogger(__name__)

#: Share of the neutral variance projected out of every emotion vector.
DEFAULT_VARIANCE = 0.5
#: The head's shrinkage when there are too few texts to choose it on a held-out fold.
DEFAULT_SHRINKAGE = 0.2
# Relative slack when comparing cumulative explained variance with the threshold, so that an
# exact spectrum (e.g. 0.5 exactly) is not pushed one component further by rounding.
_VARIANCE_EPS = 1e-9


def neutral_pcs(neutral: NeutralStats, layer_idx: int, variance: float = DEFAULT_VARIANCE
                ) -> np.ndarray:
    """Top principal components of neutral activations, ``[k, d]`` (orthonormal rows).

    ``layer_idx`` is a position in ``neutral.layers`` (not a model layer number). ``k`` is
    the smallest count whose cumulative explained variance reaches ``variance``; 0 gives
    ``k = 0`` (nothing to remove).

    >>> ns = NeutralStats.empty([0], d=3)
    >>> rng = np.random.default_rng(0)
    >>> ns.add_tokens(rng.normal(size=(1, 500, 3)) * np.array([10.0, 1.0, 1.0]))
    >>> pcs = neutral_pcs(ns, 0, variance=0.5)
    >>> pcs.shape, bool(abs(pcs[0, 0]) > 0.99)
    ((1, 3), True)
    """
    if not (isinstance(variance, (int, float, np.floating)) and 0.0 <= variance <= 1.0):
        raise EmolensError(f"variance must be a fraction in [0, 1], got {variance!r}")
    if not -len(neutral.layers) <= layer_idx < len(neutral.layers):
        raise LayerError(f"layer position {layer_idx} is out of range for "
                         f"{len(neutral.layers)} neutral layers")
    d = neutral.d
    if variance == 0:
        return np.zeros((0, d))
    evals, evecs = np.linalg.eigh(neutral.covariance(layer_idx))
    order = np.argsort(evals)[::-1]
    evals = np.clip(evals[order], 0.0, None)
    evecs = evecs[:, order]
    total = evals.sum()
    if total <= 0:  # constant activations: nothing varies, nothing to remove
        return np.zeros((0, d))
    cum = np.cumsum(evals) / total
    k = int(np.argmax(cum >= variance - _VARIANCE_EPS)) + 1
    return np.ascontiguousarray(evecs[:, :k].T)


def _check_model_info(model_info: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(model_info, Mapping):
        raise VectorFileError("model_info must be a dict")
    missing = [k for k in MODEL_KEYS if k not in model_info]
    if missing:
        raise VectorFileError(f"model_info lacks {', '.join(missing)}")
    info = dict(model_info)
    for key in ("n_layers", "hidden_size"):
        if isinstance(info[key], bool) or not isinstance(info[key], (int, np.integer)):
            raise VectorFileError(f"model_info[{key!r}] must be an integer, got {info[key]!r}")
        info[key] = int(info[key])
    return info


def build_vectors(stats: StoryStats, neutral: NeutralStats | None = None, *,
                  variance: float = DEFAULT_VARIANCE, model_info: Mapping[str, Any],
                  token_skip: int, corpus_fingerprint: str,
                  extra_meta: Mapping[str, Any] | None = None,
                  scatter: ScatterStats | None = None) -> EmotionVectors:
    """Difference-of-means emotion vectors, neutral-PC denoised and unit-normalised.

    Without ``neutral`` nothing is projected out and the residual norms are missing (NaN),
    so :meth:`EmotionVectors.residual_scale` refuses until norms are supplied. With
    ``scatter`` a shrinkage-LDA read-out head is fitted at its layers (:func:`fit_head`).

    >>> s = StoryStats.empty(["happy", "sad"], [0], d=2)
    >>> s.add("happy", np.array([[2.0, 1.0]])); s.add("sad", np.array([[0.0, 1.0]]))
    >>> info = dict(name="toy", architecture="llama", n_layers=1, hidden_size=2,
    ...             vocab_size=10, config_hash="abc")
    >>> v = build_vectors(s, model_info=info, token_skip=0, corpus_fingerprint="x")
    >>> v.matrix(0).tolist(), v.raw[:, 0].tolist()
    ([[1.0, 0.0], [-1.0, 0.0]], [[1.0, 0.0], [-1.0, 0.0]])
    """
    info = _check_model_info(model_info)
    if info["hidden_size"] != stats.d:
        raise VectorFileError(f"model hidden_size {info['hidden_size']} does not match the "
                              f"statistics' d={stats.d}")
    bad = [x for x in stats.layers if x >= info["n_layers"]]
    if bad:
        raise LayerError(f"layers {bad} are beyond the model's {info['n_layers']} layers")
    if len(stats.labels) < 2:
        raise CorpusError("difference of means needs at least 2 emotions")
    means = stats.means()  # [E, L, d] float64, raises on empty labels
    raw = means - means.mean(axis=0, keepdims=True)

    n_layers = len(stats.layers)
    norm_mean = np.full(n_layers, np.nan, np.float32)
    norm_median = np.full(n_layers, np.nan, np.float32)
    n_components: dict[str, int] = {str(x): 0 for x in stats.layers}
    denoised = raw.copy()
    if neutral is not None:
        if neutral.d != stats.d:
            raise VectorFileError(f"neutral statistics have d={neutral.d}, story statistics "
                                  f"d={stats.d}")
        pos = {x: i for i, x in enumerate(neutral.layers)}
        missing = [x for x in stats.layers if x not in pos]
        if missing:
            raise LayerError(f"neutral statistics lack layers {format_layers(missing)} "
                             f"(they have {format_layers(neutral.layers)})")
        nm, nmed = neutral.norm_stats()
        for li, layer in enumerate(stats.layers):
            j = pos[layer]
            norm_mean[li], norm_median[li] = nm[j], nmed[j]
            pcs = neutral_pcs(neutral, j, variance)
            n_components[str(layer)] = int(pcs.shape[0])
            if pcs.shape[0]:
                denoised[:, li] -= (denoised[:, li] @ pcs.T) @ pcs

    lengths = np.linalg.norm(denoised, axis=2)  # [E, L]
    scale = np.abs(denoised).max(initial=0.0)
    zero = np.argwhere(lengths <= 1e-12 * max(scale, 1e-300))
    if len(zero):
        e, li = zero[0]
        raise CorpusError(f"the vector for {stats.labels[e]!r} at layer {stats.layers[li]} is "
                          f"zero after denoising ({len(zero)} zero vector(s) in all)")
    directions = denoised / lengths[:, :, None]

    meta: dict[str, Any] = {
        "format_version": fileformat.FORMAT_VERSION,
        "emolens_version": fileformat.emolens_version(),
        "model": info,
        "layer_convention": fileformat.LAYER_CONVENTION,
        "token_skip": int(token_skip),
        "denoise": {"variance": float(variance) if neutral is not None else 0.0,
                    "n_components": n_components,
                    "neutral_tokens": int(neutral.n_tokens) if neutral is not None else 0},
        "corpus_fingerprint": str(corpus_fingerprint),
        "n_texts": {x: int(c) for x, c in zip(stats.labels, stats.counts, strict=True)},
        "n_tokens": {x: int(c) for x, c in zip(stats.labels, stats.token_counts, strict=True)},
        "recommended_layer": None,
        "layer_scores": None,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if extra_meta:
        meta.update(dict(extra_meta))
    head = None
    if scatter is not None:
        try:
            head = fit_head(scatter, stats.labels)
        except EmolensError as exc:  # e.g. one text per emotion: no within-emotion spread
            logger.warning("no read-out head fitted: %s", exc)
    return EmotionVectors(stats.labels, stats.layers, directions.astype(np.float32),
                          raw.astype(np.float32), norm_mean, norm_median, meta,
                          means.mean(axis=0).astype(np.float32), head)


def fit_head(scatter: ScatterStats, labels: Sequence[str]) -> ReadoutHead:
    """Shrinkage LDA at each of ``scatter``'s layers, rows in ``labels`` order.

    The shrinkage of each layer is the one whose fit on one fold of the training texts
    best predicts the other fold (Gaussian log-likelihood, :func:`choose_shrinkage`); the
    head is then fitted on both folds.

    >>> import torch
    >>> from emolens.extract.scatter import ScatterAccumulator
    >>> acc = ScatterAccumulator(["calm", "sad"], [0], d=2)
    >>> x = torch.tensor([[[1.0, 0.1]], [[1.2, -0.1]], [[-1.0, 0.2]], [[-0.8, 0.0]]])
    >>> acc.add(["calm", "calm", "sad", "sad"], x, [0, 1, 0, 1])
    >>> head = fit_head(acc.to_stats(), ["calm", "sad"])
    >>> head.kind, head.weight.shape, bool(head.weight[0, 0, 0] > 0 > head.weight[0, 1, 0])
    ('lda', (1, 2, 2), True)
    """
    rows = [scatter.labels.index(x) for x in labels]
    weights, biases, chosen, tables = [], [], {}, {}
    for layer in scatter.layers:
        folds = scatter.folds(layer)
        try:
            alpha, table = choose_shrinkage(folds)
        except EmolensError:  # too few texts to hold one fold out: a fixed, moderate choice
            alpha, table = DEFAULT_SHRINKAGE, {}
        sums, counts, scat = scatter.total(layer)
        w, b, _center = lda_weights(sums[rows], counts[rows], scat, alpha)
        weights.append(w)
        biases.append(b)
        chosen[str(layer)] = alpha
        tables[str(layer)] = table
    n = scatter.counts.sum(1).tolist()
    return ReadoutHead(scatter.layers, np.stack(weights), np.stack(biases),
                       {"kind": "lda", "shrinkage": chosen, "shrinkage_loglik": tables,
                        "criterion": "held-out Gaussian log-likelihood, 2 folds of the "
                                     "training texts", "fold_texts": n})


def vectors_from(extraction: Extraction, *, variance: float = DEFAULT_VARIANCE,
                 model: Any = None) -> EmotionVectors:
    """Emotion vectors from a whole-corpus (or fully merged) :class:`Extraction`.

    The model's identity comes from the extraction itself (shard files record it), so no
    model needs loading; pass ``model`` (a model or its fingerprint) to check it as well.
    A single shard of several is refused: merge them first (:func:`merge_stats`).

    >>> from emolens.extract import Extraction, PassStats
    >>> s = StoryStats.empty(["calm", "sad"], [1], d=lm.hidden_size)
    >>> s.add("calm", np.ones((1, 32))); s.add("sad", -np.ones((1, 32)))
    >>> run = Extraction(s, None, PassStats(), token_skip=0, corpus_fingerprint="toy",
    ...                  model=lm.fingerprint())
    >>> vectors_from(run, model=lm)
    EmotionVectors(2 emotions, layers 1, d=32, model='tiny-llama')
    """
    if extraction.shard is not None and extraction.shard[1] > 1:
        i, n = extraction.shard
        raise VectorFileError(f"these statistics are shard {i}/{n} only; merge all {n} shards "
                              "first (emolens extract merge)")
    stored = extraction.model
    if stored is None and model is None:
        raise VectorFileError("the extraction does not record its model; pass model=")
    if model is not None:
        if stored is not None:
            check_model(stored, model, "statistics were")
        else:
            stored = model_fingerprint(model)
    return build_vectors(extraction.stories, extraction.neutral, variance=variance,
                         model_info=stored, token_skip=extraction.token_skip,
                         corpus_fingerprint=extraction.corpus_fingerprint,
                         scatter=extraction.scatter)
