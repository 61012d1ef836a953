"""The geometry of a model's emotion vectors (study section 6), as one result object and
the ``geometry`` analysis of the registry.

Cosine matrix ordered by hierarchical clustering, k-means (k = 10) against the study's
clusters, PCA against valence and arousal ratings (and the best-aligned axes within the
top PCs, cross-validated), and cross-layer representational similarity.  Pure maths
on a vector file: no model needed.

>>> space = analyse(vecs)
>>> space.kind, len(space.emotions), space.to_json()["n_emotions"]
('geometry', 6, 6)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens.concepts import EMOTION_CLUSTERS, Norms, load_norms
from emolens.experiments import geometry as geo
from emolens.experiments.registry import Analysis, Context, Option, Result, jsonable, register
from emolens.stats import Correlation, format_correlation

if TYPE_CHECKING:  # pragma: no cover
    from emolens.vectors import EmotionVectors

__all__ = ["RSA_LAYERS", "EmotionSpace", "analyse"]

#: Layers compared in the cross-layer similarity (the study used 14 evenly spaced).
RSA_LAYERS = 14


def _corr(c: Correlation) -> dict[str, Any]:
    return {"r": round(c.r, 4), "n": c.n, "p": c.p, "ci_low": round(c.ci_low, 4),
            "ci_high": round(c.ci_high, 4)}


@dataclass(frozen=True, eq=False)
class EmotionSpace(Result):
    """Everything section 6 of the study measures, for one vector file and layer.

    The arrays (``cosine``, ``order``, ``pca``, ``rsa``) are what the figures draw;
    :meth:`to_json` keeps the numbers the report quotes.
    """

    kind = "geometry"

    layer: int
    emotions: tuple[str, ...]
    cosine: np.ndarray
    order: list[int]
    kmeans_labels: np.ndarray
    clusters: geo.ClusterComparison
    pca: geo.PCA
    norms: geo.NormCorrelations
    best_valence: geo.BestAxis
    best_arousal: geo.BestAxis
    rsa: geo.RSAResult
    valence: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        """The headline numbers, JSON-safe (every correlation with n, p and interval)."""
        c = self.clusters
        return jsonable({
            "kind": self.kind, "analysis": "geometry", "layer": self.layer,
            "n_emotions": len(self.emotions),
            "kmeans": {"k": c.n_clusters, "ari_vs_study": round(c.ari, 4),
                       "shuffled_mean": round(c.baseline_mean, 4),
                       "shuffled_p95": round(c.baseline_p95, 4), "p": c.p,
                       "n_perm": c.n_perm},
            "pca_explained": [round(float(x), 4) for x in self.pca.explained_variance_ratio],
            "pc1_valence": _corr(self.norms.pc1_valence),
            "pc2_arousal": _corr(self.norms.pc2_arousal),
            "valence_source": self.norms.valence_source,
            "arousal_source": self.norms.arousal_source,
            "best_valence_axis": {"r": round(self.best_valence.r, 4),
                                  "r_loo": round(self.best_valence.r_loo, 4),
                                  "n": self.best_valence.n},
            "best_arousal_axis": {"r": round(self.best_arousal.r, 4),
                                  "r_loo": round(self.best_arousal.r_loo, 4),
                                  "n": self.best_arousal.n},
            "rsa_layers": [int(x) for x in self.rsa.layers],
            "rsa_mean_offdiag": round(float(_offdiag_mean(self.rsa.matrix)), 4),
        })

    def summary(self) -> str:
        """The study's section 6 numbers beside ours, in a paragraph."""
        d, c = self.to_json(), self.clusters
        evr = self.pca.explained_variance_ratio
        return (
            f"At layer {self.layer}, PC1 explains {evr[0]:.0%} and PC2 {evr[1]:.0%} of the "
            f"variance among {len(self.emotions)} emotion vectors (study: 26% and 15%). "
            f"PC1 against human valence ratings ({self.norms.valence_source}): "
            f"{format_correlation(self.norms.pc1_valence)} (study: r = 0.81, n = 45). "
            f"PC2 against arousal ({self.norms.arousal_source}): "
            f"{format_correlation(self.norms.pc2_arousal)} (study: r = 0.66). The best valence "
            f"axis within the top 3 PCs reaches r = {self.best_valence.r:.2f} in sample and "
            f"{self.best_valence.r_loo:.2f} leave-one-out. k-means with k = 10 agrees with the "
            f"study's clusters at ARI = {c.ari:.2f} (shuffled labels: mean {c.baseline_mean:.3f}, "
            f"95th percentile {c.baseline_p95:.3f}; {_perm_p(c.p, c.n_perm)}). Across "
            f"{len(self.rsa.layers)} layers the cosine structure correlates at "
            f"{d['rsa_mean_offdiag']:.2f} on average between layer pairs.")


def _perm_p(p: float, n_perm: int) -> str:
    floor = 1 / (n_perm + 1)
    return f"p < {floor * 1.01:.2g} ({n_perm} shuffles)" if p <= floor else f"p = {p:.3g}"


def _offdiag_mean(m: np.ndarray) -> float:
    mask = ~np.eye(len(m), dtype=bool)
    return float(m[mask].mean()) if mask.any() else float("nan")


def _rsa_layers(vectors: EmotionVectors) -> list[int]:
    layers = list(vectors.layers)
    if len(layers) <= RSA_LAYERS:
        return layers
    # the study's "central portion": skip the first and last sixth of depth
    lo, hi = len(layers) // 6, len(layers) - len(layers) // 6
    idx = np.linspace(lo, hi - 1, RSA_LAYERS).round().astype(int)
    return [layers[i] for i in sorted(set(idx))]


def analyse(vectors: EmotionVectors, layer: int | None = None, norms: Norms | None = None,
            seed: int = 0, n_perm: int = 1000) -> EmotionSpace:
    """Run every geometry analysis of the study on ``vectors`` at ``layer`` (default: the
    file's recommended layer).

    >>> "k-means with k = 10" in analyse(vecs, layer=1).summary()
    True
    """
    layer = vectors.default_layer if layer is None else layer
    norms = norms or load_norms()
    names = list(vectors.emotions)
    M = vectors.matrix(layer).astype(np.float64)
    km = geo.kmeans(M, k=min(10, len(names)), seed=seed)
    clustered = [e for e in names if any(e in m for m in EMOTION_CLUSTERS.values())]
    keep = [names.index(e) for e in clustered]
    comparison = geo.compare_with_study_clusters(clustered, km.labels[keep], n_perm=n_perm,
                                                 seed=seed)
    p, _ = geo.orient_pcs(geo.pca(M, min(10, len(names) - 1), names), names)
    norm_corr = geo.norm_correlations(p, names, norms)
    top3 = p.scores[:, :3]
    axes = {}
    for kind in ("valence", "arousal"):
        ratings = getattr(norms, kind)
        rated = [i for i, e in enumerate(names) if e in ratings]
        axes[kind] = geo.best_axis(top3[rated], [ratings[names[i]] for i in rated])
    rsa = geo.rsa({x: vectors.cosine_matrix(x) for x in _rsa_layers(vectors)})
    return EmotionSpace(layer, tuple(names), vectors.cosine_matrix(layer), geo.cluster_order(M),
                        km.labels, comparison, p, norm_corr, axes["valence"], axes["arousal"],
                        rsa, dict(norms.valence))


def _run(ctx: Context, n_perm: int) -> EmotionSpace:
    layer = None if ctx.layer is None else (
        ctx.lm.resolve_layer(ctx.layer) if ctx.lm is not None else int(ctx.layer))
    return analyse(ctx.vectors, layer=layer, seed=ctx.seed, n_perm=n_perm)


ANALYSIS = register(Analysis(
    name="geometry", title="The geometry of emotion space", section="6",
    description="Cosine structure, k-means against the study's ten clusters, PCA against "
                "valence and arousal ratings, and the stability of the geometry across layers.",
    study="PC1 is valence (r = 0.81), PC2 arousal (r = 0.66); 10 k-means clusters.",
    run=_run, needs_model=False,
    options=(Option("n_perm", 1000, "label shuffles for the k-means baseline"),)))
