"""Geometry glue on constructed vectors whose structure is known."""

from __future__ import annotations

import numpy as np

from emolens.concepts import EMOTION_CLUSTERS, EMOTIONS, load_norms
from emolens.experiments.emotion_space import analyse
from emolens.vectors import EmotionVectors


def planted_vectors(noise: float = 0.05, seed: int = 0) -> EmotionVectors:
    """171 vectors: a valence axis (from the shipped norms) plus one direction per study
    cluster plus noise, at three layers."""
    rng = np.random.default_rng(seed)
    d = 64
    norms = load_norms()
    cluster_dirs = {c: rng.normal(size=d) for c in EMOTION_CLUSTERS}
    valence_dir = rng.normal(size=d)
    rows = []
    for e in EMOTIONS:
        cluster = next(c for c, m in EMOTION_CLUSTERS.items() if e in m)
        v = norms.valence.get(e, 0.0) * valence_dir * 0.3 + cluster_dirs[cluster]
        rows.append(v + noise * rng.normal(size=d))
    M = np.array(rows)
    M /= np.linalg.norm(M, axis=1, keepdims=True)
    directions = np.stack([M, M, M], axis=1).astype(np.float32)
    model = dict(name="planted", architecture="llama", n_layers=3, hidden_size=d,
                 vocab_size=10, config_hash="x")
    return EmotionVectors(EMOTIONS, (0, 1, 2), directions, directions,
                          np.ones(3), np.ones(3), {"format_version": 1, "model": model})


def test_planted_clusters_and_valence_are_found():
    space = analyse(planted_vectors(), layer=1)
    d = space.to_json()
    assert d["n_emotions"] == 171
    assert d["kmeans"]["ari_vs_study"] > 0.8 > d["kmeans"]["shuffled_p95"]
    assert d["pc1_valence"]["n"] == 139  # only rated emotions count
    assert space.best_valence.r > 0.7 and space.best_valence.r_loo <= space.best_valence.r
    assert d["rsa_mean_offdiag"] > 0.999  # identical layers
    assert "ARI" in space.summary() and "not human" in space.summary()


def test_random_vectors_do_not_match_the_study():
    rng = np.random.default_rng(1)
    M = rng.normal(size=(171, 32))
    M /= np.linalg.norm(M, axis=1, keepdims=True)
    base = planted_vectors()
    vecs = EmotionVectors(EMOTIONS, (0,), M[:, None, :].astype(np.float32),
                          M[:, None, :].astype(np.float32), np.ones(1), np.ones(1),
                          {**base.meta, "model": {**base.meta["model"], "n_layers": 1,
                                                  "hidden_size": 32}})
    d = analyse(vecs).to_json()
    assert abs(d["kmeans"]["ari_vs_study"]) < 0.1
    assert d["kmeans"]["p"] > 0.01
