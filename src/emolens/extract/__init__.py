"""Turn a corpus into emotion vectors.

* :mod:`emolens.extract.stats`: sufficient statistics (:class:`StoryStats`,
  :class:`NeutralStats`), exact to merge;
* :mod:`emolens.extract.build`: statistics -> :class:`~emolens.vectors.EmotionVectors`
  (difference of means, neutral-PC denoising, residual norms);
* :mod:`emolens.extract.accumulate`: running statistics in torch on the model's device, of
  a fixed size whatever the corpus;
* :mod:`emolens.extract.shards`: a run's statistics as a file (:class:`Extraction`), the
  exact merge of shards;
* :mod:`emolens.extract.run`: the passes over a model, the layer
  sweep, and :func:`extract`, the whole pipeline;
* :mod:`emolens.extract.distributed`: data-parallel extraction under torch.distributed
  (``torchrun`` / ``accelerate launch``), statistics all-reduced across ranks;
* :mod:`emolens.extract.shipped`: the default model's vectors inside the package.
"""

from __future__ import annotations

from emolens.extract.build import DEFAULT_VARIANCE, build_vectors, neutral_pcs, vectors_from
from emolens.extract.pipeline import extract
from emolens.extract.run import (
    DEFAULT_TOKEN_SKIP,
    collect,
    compute_model,
    length_batches,
    neutral_statistics,
    pooled_features,
    pooled_means,
    shard_of,
)
from emolens.extract.shards import Extraction, PassStats, merge_stats, shard_path
from emolens.extract.shipped import SHIPPED_VECTORS, default_vectors, shipped_vectors_path
from emolens.extract.stats import NeutralStats, StoryStats
from emolens.extract.sweep import classify, layer_sweep, sweep_counts

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
    "compute_model",
    "default_vectors",
    "extract",
    "layer_sweep",
    "length_batches",
    "merge_stats",
    "neutral_pcs",
    "neutral_statistics",
    "pooled_features",
    "pooled_means",
    "shard_of",
    "shard_path",
    "shipped_vectors_path",
    "sweep_counts",
    "vectors_from",
]
