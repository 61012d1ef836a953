"""Geometry of emotion space (paper-spec section 6): cosine structure, clusters, principal
components, their relation to valence/arousal ratings, and cross-layer similarity.

Everything takes an ``[E, d]`` matrix of emotion vectors (one row per emotion) and, where
names matter, the list of emotion names in row order. Pure numpy/scipy, no model code.

>>> M = np.array([[1.0, 0.0], [-1.0, 0.0], [0.9, 0.1], [-0.9, -0.1]])
>>> cluster_order(M)
[0, 2, 1, 3]
>>> adjusted_rand_index(kmeans(M, k=2).labels, [0, 1, 0, 1])
1.0
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import pdist

from emolens.concepts import EMOTION_CLUSTERS
from emolens.errors import CorpusError, EmolensError
from emolens.stats import Correlation, pearson, permutation_test

__all__ = [
    "PC_ANCHORS",
    "PCA",
    "BestAxis",
    "ClusterComparison",
    "KMeansResult",
    "NormCorrelations",
    "RSAResult",
    "adjusted_rand_index",
    "best_axis",
    "cluster_order",
    "compare_with_study_clusters",
    "cosine_matrix",
    "kmeans",
    "norm_correlations",
    "orient_pcs",
    "pca",
    "rsa",
]


def _matrix(M: Any, min_rows: int = 1) -> np.ndarray:
    X = np.asarray(M, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < min_rows or X.shape[1] == 0:
        raise EmolensError(f"expected an [E, d] matrix with E >= {min_rows}, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise EmolensError("emotion matrix contains NaN or infinite values")
    return X


def _unit_rows(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise EmolensError(f"row {int(np.argmin(norms[:, 0]))} of the emotion matrix is zero")
    return X / norms


def cosine_matrix(M: Any) -> np.ndarray:
    """Cosine similarity ``[E, E]`` between the rows of ``M`` (rows need not be unit).

    >>> cosine_matrix([[1.0, 0.0], [1.0, 1.0]]).round(3).tolist()
    [[1.0, 0.707], [0.707, 1.0]]
    """
    U = _unit_rows(_matrix(M))
    C = np.clip(U @ U.T, -1.0, 1.0)
    np.fill_diagonal(C, 1.0)
    return C


def cluster_order(M: Any) -> list[int]:
    """Leaf order of average-linkage hierarchical clustering on cosine distance.

    Uses scipy's optimal leaf ordering so that neighbouring rows of the ordered cosine
    matrix are as similar as possible (the dendrogram itself is unchanged).
    """
    X = _unit_rows(_matrix(M))
    if X.shape[0] < 3:
        return list(range(X.shape[0]))
    D = np.clip(pdist(X, metric="cosine"), 0.0, 2.0)
    Z = linkage(D, method="average", optimal_ordering=True)
    return [int(i) for i in leaves_list(Z)]


# --------------------------------------------------------------------------------------------
# k-means and the adjusted Rand index
# --------------------------------------------------------------------------------------------


class KMeansResult(NamedTuple):
    """Best of ``n_init`` k-means runs: labels per row, centres, and the objective.

    ``inertia`` is the sum of (1 - cosine) to the assigned centre for ``metric="cosine"``,
    and the sum of squared distances for ``metric="euclidean"``.
    """

    labels: np.ndarray
    centers: np.ndarray
    inertia: float
    n_iter: int


def _dist(X: np.ndarray, C: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        return 1.0 - X @ C.T
    sq = (X * X).sum(1)[:, None] - 2.0 * X @ C.T + (C * C).sum(1)[None, :]
    return np.maximum(sq, 0.0)


def _plusplus(X: np.ndarray, k: int, metric: str, rng: np.random.Generator) -> np.ndarray:
    n = X.shape[0]
    centers = [X[rng.integers(n)]]
    d = _dist(X, np.array(centers), metric)[:, 0]
    for _ in range(1, k):
        w = np.maximum(d, 0.0)
        # cosine distance 1 - cos equals half the squared euclidean distance on unit vectors,
        # so weighting by it is the usual D^2 sampling
        total = w.sum()
        i = int(rng.integers(n)) if total <= 0 else int(rng.choice(n, p=w / total))
        centers.append(X[i])
        d = np.minimum(d, _dist(X, X[i][None, :], metric)[:, 0])
    return np.array(centers)


def _centres(X: np.ndarray, labels: np.ndarray, k: int, metric: str,
             D: np.ndarray) -> np.ndarray:
    C = np.zeros((k, X.shape[1]))
    own = D[np.arange(X.shape[0]), labels]
    taken: set[int] = set()
    for j in range(k):
        members = labels == j
        if members.any():
            C[j] = X[members].mean(0)
        else:
            # An empty cluster restarts on the point worst served by its current centre.
            order = np.argsort(-own)
            i = next(int(i) for i in order if int(i) not in taken)
            taken.add(i)
            C[j] = X[i]
    if metric == "cosine":
        nrm = np.linalg.norm(C, axis=1, keepdims=True)
        C = np.divide(C, nrm, out=np.zeros_like(C), where=nrm > 0)
    return C


def kmeans(M: Any, k: int = 10, seed: int = 0, n_init: int = 20, metric: str = "cosine",
           max_iter: int = 300) -> KMeansResult:
    """k-means with k-means++ seeding; the run with the lowest objective of ``n_init`` wins.

    ``metric="cosine"`` is spherical k-means (rows and centres normalised to unit length);
    ``"euclidean"`` is plain Lloyd's algorithm on the rows as given. Deterministic in ``seed``.

    >>> X = np.array([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1]])
    >>> kmeans(X, k=2, n_init=3).inertia < 0.02
    True
    """
    if metric not in ("cosine", "euclidean"):
        raise EmolensError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    X = _matrix(M)
    if metric == "cosine":
        X = _unit_rows(X)
    if not 1 <= k <= X.shape[0]:
        raise EmolensError(f"k must lie in [1, {X.shape[0]}] for {X.shape[0]} rows, got {k}")
    if n_init < 1:
        raise EmolensError(f"n_init must be >= 1, got {n_init}")
    rng = np.random.default_rng(seed)
    best: KMeansResult | None = None
    for _ in range(n_init):
        C = _plusplus(X, k, metric, rng)
        labels = np.full(X.shape[0], -1)
        it = 0
        while it < max_iter:
            it += 1
            D = _dist(X, C, metric)
            new = D.argmin(1)
            if np.array_equal(new, labels):
                break
            labels = new
            C = _centres(X, labels, k, metric, D)
        D = _dist(X, C, metric)
        labels = D.argmin(1)
        inertia = float(D[np.arange(X.shape[0]), labels].sum())
        if best is None or inertia < best.inertia - 1e-12:
            best = KMeansResult(labels.astype(np.int64), C, inertia, it)
    assert best is not None
    return best


def _comb2(x: np.ndarray) -> float:
    x = x.astype(np.float64)
    return float((x * (x - 1) / 2.0).sum())


def adjusted_rand_index(labels_a: Sequence[Hashable] | np.ndarray,
                        labels_b: Sequence[Hashable] | np.ndarray) -> float:
    """Adjusted Rand index (Hubert and Arabie, 1985) of two partitions of the same items.

    1 = identical partitions (label names do not matter), about 0 = chance agreement, and it
    can be negative. Two partitions that are both all-in-one or both all-singletons give 1.

    >>> adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0])
    1.0
    >>> round(adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]), 4)
    0.5714
    >>> round(adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]), 4)
    -0.5
    """
    a = np.asarray(labels_a).reshape(-1)
    b = np.asarray(labels_b).reshape(-1)
    if a.shape != b.shape:
        raise EmolensError(f"labelings differ in length ({a.size} vs {b.size})")
    n = a.size
    if n < 2:
        return 1.0
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1), dtype=np.int64)
    np.add.at(table, (ia, ib), 1)
    index = _comb2(table)
    sum_a = _comb2(table.sum(1))
    sum_b = _comb2(table.sum(0))
    expected = sum_a * sum_b / (n * (n - 1) / 2.0)
    maximum = (sum_a + sum_b) / 2.0
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))


@dataclass(frozen=True)
class ClusterComparison:
    """Agreement of a clustering with the study's ten clusters, and what chance gives.

    ``baseline_mean`` and ``baseline_p95`` are the mean and 95th percentile ARI of the
    study's labels against ``n_perm`` random shuffles of ours (every ordering, and an exact
    p, when there are fewer); ``p`` is the permutation p-value (observed counts as one
    shuffle), from :func:`emolens.stats.permutation_test`.
    """

    ari: float
    n: int
    n_clusters: int
    baseline_mean: float
    baseline_p95: float
    p: float
    n_perm: int


def compare_with_study_clusters(emotions: Sequence[str], labels: Sequence[Hashable] | np.ndarray,
                                n_perm: int = 1000, seed: int = 0) -> ClusterComparison:
    """ARI between ``labels`` (one per emotion, e.g. from :func:`kmeans`) and the study's
    k = 10 clusters (:data:`emolens.concepts.EMOTION_CLUSTERS`), with a shuffle baseline.

    >>> names = list(EMOTION_CLUSTERS["Exuberant Joy"][:3] + EMOTION_CLUSTERS["Hostile Anger"][:3])
    >>> compare_with_study_clusters(names, [0, 0, 0, 1, 1, 1], n_perm=50).ari
    1.0
    """
    names = list(emotions)
    ours = np.asarray(labels).reshape(-1)
    if len(names) != ours.size:
        raise EmolensError(f"{len(names)} emotions but {ours.size} labels")
    cluster = {e: c for c, members in EMOTION_CLUSTERS.items() for e in members}
    unknown = [e for e in names if e not in cluster]
    if unknown:
        raise CorpusError(f"not among the study's clustered emotions: {unknown[:5]}")
    study = np.array([cluster[e] for e in names])
    ari = adjusted_rand_index(ours, study)
    if n_perm:
        test = permutation_test(adjusted_rand_index, study, ours, n=n_perm, seed=seed,
                                alternative="greater")
        null, p = test.null, test.p
    else:
        null, p = np.zeros(0), math.nan
    return ClusterComparison(
        ari=ari, n=len(names), n_clusters=int(np.unique(ours).size),
        baseline_mean=float(null.mean()) if null.size else math.nan,
        baseline_p95=float(np.quantile(null, 0.95)) if null.size else math.nan,
        p=p, n_perm=int(null.size))


# --------------------------------------------------------------------------------------------
# PCA and the valence / arousal norms
# --------------------------------------------------------------------------------------------

#: Sign convention for principal components, fixed before looking at any norm: PC1 is
#: oriented so that "happy" scores above 0 (the positive end reads as pleasant) and PC2 so
#: that "outraged" scores above "serene" (the study's stated high- and low-arousal ends).
#: Each entry is (positive anchor, negative anchor or None). A PC whose anchors are missing
#: from the emotion list keeps pca's default sign.
PC_ANCHORS: dict[int, tuple[str, str | None]] = {0: ("happy", None), 1: ("outraged", "serene")}


class PCA(NamedTuple):
    """Principal components of the emotion matrix, centred over emotions.

    ``scores [E, k]`` (projection of each centred emotion), ``components [k, d]`` (unit
    rows), ``explained_variance_ratio [k]`` (of the total variance). To project a new
    vector ``v``: ``(v - M.mean(0)) @ components.T``.
    """

    scores: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray


def pca(M: Any, n_components: int, emotions: Sequence[str] | None = None) -> PCA:
    """PCA by SVD after subtracting the mean over emotions.

    Signs: by default each component's largest-magnitude loading is positive (so results
    are deterministic); with ``emotions`` given, :data:`PC_ANCHORS` is applied on top.

    >>> X = np.array([[3.0, 0.0], [-3.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    >>> p = pca(X, 2)
    >>> p.explained_variance_ratio.round(2).tolist(), p.components.round(6).tolist()
    ([0.9, 0.1], [[1.0, 0.0], [0.0, 1.0]])
    """
    X = _matrix(M, min_rows=2)
    k = int(n_components)
    if not 1 <= k <= min(X.shape):
        raise EmolensError(f"n_components must lie in [1, {min(X.shape)}], got {k}")
    mean = X.mean(0)
    Xc = X - mean
    U, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    total = float((S ** 2).sum())
    comps = Vt[:k].copy()
    big = np.argmax(np.abs(comps), axis=1)
    comps *= np.sign(comps[np.arange(k), big])[:, None]
    scores = Xc @ comps.T
    evr = (S[:k] ** 2) / total if total > 0 else np.zeros(k)
    out = PCA(scores, comps, evr)
    if emotions is not None:
        out = orient_pcs(out, emotions)[0]
    return out


def orient_pcs(p: PCA, emotions: Sequence[str],
               anchors: Mapping[int, tuple[str, str | None]] | None = None
               ) -> tuple[PCA, np.ndarray]:
    """Flip PC signs by the anchor convention (:data:`PC_ANCHORS`); returns the PCA and the
    applied signs (+1 / -1 per component). Never looks at any rating.

    >>> X = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    >>> p, signs = orient_pcs(pca(X, 2), ["happy", "sad", "outraged", "serene"])
    >>> signs.tolist(), float(p.scores[0, 0]) > 0
    ([-1.0, 1.0], True)
    """
    names = list(emotions)
    if len(names) != p.scores.shape[0]:
        raise EmolensError(f"{len(names)} emotion names for {p.scores.shape[0]} rows of scores")
    row = {e: i for i, e in enumerate(names)}
    signs = np.ones(p.scores.shape[1])
    for j, (pos, neg) in (PC_ANCHORS if anchors is None else anchors).items():
        if j >= p.scores.shape[1] or pos not in row or (neg is not None and neg not in row):
            continue
        value = p.scores[row[pos], j] - (p.scores[row[neg], j] if neg is not None else 0.0)
        if value < 0:
            signs[j] = -1.0
    return PCA(p.scores * signs, p.components * signs[:, None],
               p.explained_variance_ratio), signs


def _ratings(norms: Any, kind: str) -> Mapping[str, float]:
    if isinstance(norms, Mapping):
        return norms.get(kind, {}) or {}
    return getattr(norms, kind)


@dataclass(frozen=True)
class NormCorrelations:
    """Principal-component scores against valence and arousal ratings.

    ``pc1_valence`` and ``pc2_arousal`` are the study's headline pairs; ``valence`` and
    ``arousal`` hold every PC's correlation (the study found arousal on PC2 or PC3
    depending on the layer). Each uses only the emotions that have that rating, so n can
    differ. ``signs`` records the orientation applied (see :data:`PC_ANCHORS`).
    """

    pc1_valence: Correlation
    pc2_arousal: Correlation
    valence: list[Correlation]
    arousal: list[Correlation]
    signs: np.ndarray
    valence_source: str
    arousal_source: str


def _norm_vector(emotions: Sequence[str], ratings: Mapping[str, float]) -> np.ndarray:
    return np.array([float(ratings[e]) if e in ratings else math.nan for e in emotions])


def norm_correlations(scores: Any, emotions: Sequence[str], norms: Any) -> NormCorrelations:
    """Pearson r of each PC with valence and arousal ratings (emotions without a rating
    are left out, never imputed).

    ``scores`` is ``[E, k]`` (k >= 2) or a :class:`PCA`; ``norms`` a
    :class:`emolens.concepts.Norms` or a mapping ``{"valence": {...}, "arousal": {...}}``.
    PCs are oriented by :data:`PC_ANCHORS` first; the correlations are reported exactly as
    computed after that, with whatever sign they have.

    >>> s = np.array([[2.0, 1.0], [-2.0, 0.5], [1.0, 1.0], [-1.0, -1.0]])
    >>> nc = norm_correlations(s, ["happy", "sad", "serene", "outraged"],
    ...                        {"valence": {"happy": 3, "sad": -2, "serene": 1},
    ...                         "arousal": {"happy": 6, "sad": 3, "serene": 1, "outraged": 5}})
    >>> nc.pc1_valence.n, nc.pc2_arousal.n, nc.signs.tolist()
    (3, 4, [1.0, -1.0])
    """
    names = list(emotions)
    if isinstance(scores, PCA):
        scores = scores.scores
    S = _matrix(scores)
    if S.shape[0] != len(names) or S.shape[1] < 2:
        raise EmolensError(f"need [E, k>=2] scores for {len(names)} emotions, got {S.shape}")
    placeholder = PCA(S, np.eye(S.shape[1]), np.zeros(S.shape[1]))
    oriented, signs = orient_pcs(placeholder, names)
    S = oriented.scores
    out: dict[str, list[Correlation]] = {}
    for kind in ("valence", "arousal"):
        y = _norm_vector(names, _ratings(norms, kind))
        keep = np.isfinite(y)
        out[kind] = [pearson(S[keep, j], y[keep]) for j in range(S.shape[1])]
    return NormCorrelations(
        pc1_valence=out["valence"][0], pc2_arousal=out["arousal"][1],
        valence=out["valence"], arousal=out["arousal"], signs=signs,
        valence_source=str(getattr(norms, "valence_source", "") or ""),
        arousal_source=str(getattr(norms, "arousal_source", "") or ""))


class BestAxis(NamedTuple):
    """Direction in PC space best aligned with a rating, fitted by least squares.

    ``direction`` is a unit vector over the k PCs; ``r`` the in-sample correlation of the
    projection with the rating (optimistic: k free parameters); ``r_loo`` the correlation of
    leave-one-out predictions with the rating (the honest figure); ``n`` the emotions used.
    """

    direction: np.ndarray
    r: float
    r_loo: float
    n: int


def best_axis(scores_k: Any, target: Any) -> BestAxis:
    """Least-squares fit ``target ~ a + scores_k @ w``; rows with NaN target are dropped.

    >>> rng = np.random.default_rng(0)
    >>> S = rng.normal(size=(40, 3))
    >>> b = best_axis(S, S @ np.array([0.0, 0.6, 0.8]) + 0.01 * rng.normal(size=40))
    >>> b.direction.round(2).tolist(), round(b.r, 3) > 0.99, b.n
    ([0.0, 0.6, 0.8], True, 40)
    """
    S = np.asarray(scores_k, dtype=np.float64)
    if S.ndim == 1:
        S = S[:, None]
    y = np.asarray(target, dtype=np.float64).reshape(-1)
    if S.ndim != 2 or S.shape[0] != y.size:
        raise EmolensError(f"scores {S.shape} and target ({y.size}) disagree on rows")
    keep = np.isfinite(y) & np.all(np.isfinite(S), axis=1)
    S, y = S[keep], y[keep]
    n, k = S.shape
    if n < k + 2:
        raise EmolensError(f"need at least {k + 2} rated emotions to fit {k} PCs, got {n}")
    X = np.column_stack([np.ones(n), S])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    w = coef[1:]
    wn = float(np.linalg.norm(w))
    direction = w / wn if wn > 0 else np.zeros(k)
    fitted = X @ coef
    r = pearson(fitted, y).r if wn > 0 else math.nan
    # Leave-one-out prediction without refitting: y_i - e_i / (1 - h_ii) (hat-matrix identity).
    H_diag = np.einsum("ij,ij->i", X, np.linalg.pinv(X).T)
    resid = y - fitted
    denom = 1.0 - H_diag
    if np.any(denom <= 1e-12):
        loo = np.array([_loo_one(X, y, i) for i in range(n)])
    else:
        loo = y - resid / denom
    r_loo = pearson(loo, y).r
    return BestAxis(direction, float(r), float(r_loo), int(n))


def _loo_one(X: np.ndarray, y: np.ndarray, i: int) -> float:
    mask = np.arange(len(y)) != i
    coef, *_ = np.linalg.lstsq(X[mask], y[mask], rcond=None)
    return float(X[i] @ coef)


# --------------------------------------------------------------------------------------------
# cross-layer representational similarity
# --------------------------------------------------------------------------------------------


class RSAResult(NamedTuple):
    """``matrix[i, j]``: Pearson r between the upper triangles of layer i's and layer j's
    emotion x emotion similarity matrices; ``layers`` gives the row order."""

    layers: list[Any]
    matrix: np.ndarray


def rsa(matrices: Mapping[Any, Any]) -> RSAResult:
    """Compare ``[E, E]`` similarity matrices across layers (diagonal excluded).

    >>> A = np.array([[1.0, 0.5, -0.2], [0.5, 1.0, 0.1], [-0.2, 0.1, 1.0]])
    >>> rsa({4: A, 8: A, 12: -A}).matrix.round(3).tolist()
    [[1.0, 1.0, -1.0], [1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]]
    """
    layers = list(matrices)
    if not layers:
        raise EmolensError("rsa needs at least one layer")
    mats = [np.asarray(matrices[lay], dtype=np.float64) for lay in layers]
    E = mats[0].shape[0]
    for lay, m in zip(layers, mats, strict=True):
        if m.shape != (E, E):
            raise EmolensError(f"layer {lay}: expected a [{E}, {E}] matrix, got {m.shape}")
    if E < 3:
        raise EmolensError("rsa needs at least 3 emotions (3 off-diagonal pairs)")
    iu = np.triu_indices(E, k=1)
    V = np.array([m[iu] for m in mats])
    R = np.eye(len(layers))
    for i in range(len(layers)):
        for j in range(i + 1, len(layers)):
            R[i, j] = R[j, i] = pearson(V[i], V[j]).r
    return RSAResult(layers, R)
