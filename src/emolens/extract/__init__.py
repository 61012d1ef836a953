"""Turn a corpus into emotion vectors.

* :mod:`emolens.extract.stats`: sufficient statistics (:class:`StoryStats`,
  :class:`NeutralStats`), exact to merge;
* :mod:`emolens.extract.build`: statistics -> :class:`~emolens.vectors.EmotionVectors`
  (difference of means, neutral-PC denoising, residual norms);
* :mod:`emolens.extract.run`: the passes over a model, shards and their merge, the layer
  sweep, and :func:`extract`, the whole pipeline;
* :mod:`emolens.extract.shipped`: the default model's vectors inside the package.
"""

from __future__ import annotations

from emolens.extract.build import DEFAULT_VARIANCE, build_vectors, neutral_pcs, vectors_from
from emolens.extract.run import (
    DEFAULT_TOKEN_SKIP,
    Extraction,
    PassStats,
    classify,
    collect,
    extract,
    layer_sweep,
    length_batches,
    merge_stats,
    neutral_statistics,
    pooled_features,
    shard_of,
    shard_path,
)
from emolens.extract.shipped import SHIPPED_VECTORS, default_vectors, shipped_vectors_path
from emolens.extract.stats import NeutralStats, StoryStats

__all__ = [
    "DEFAULT_TOKEN_SKIP",
    "DEFAULT_VARIANCE",
    "SHIPPED_VECTORS",
    "Extraction",
    "NeutralStats",
    "PassStats",
    "StoryStats",
    "build_vectors",
    "classify",
    "collect",
    "default_vectors",
    "extract",
    "layer_sweep",
    "length_batches",
    "merge_stats",
    "neutral_pcs",
    "neutral_statistics",
    "pooled_features",
    "shard_of",
    "shard_path",
    "shipped_vectors_path",
    "vectors_from",
]
