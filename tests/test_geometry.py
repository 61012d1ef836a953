"""Geometry with planted answers: ARI by hand, clusters, PCA axes, norm correlations, the
best-aligned axis and cross-layer similarity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from emolens.concepts import EMOTION_CLUSTERS, EMOTIONS, load_norms
from emolens.errors import CorpusError, EmolensError
from emolens.experiments.geometry import (
    PCA,
    adjusted_rand_index,
    best_axis,
    cluster_order,
    compare_with_study_clusters,
    cosine_matrix,
    kmeans,
    norm_correlations,
    orient_pcs,
    pca,
    rsa,
)


def _planted(n_clusters=5, per=8, d=32, spread=0.05, seed=0):
    """Unit vectors in tight cones around random centres; returns (M, true labels)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    labels = np.repeat(np.arange(n_clusters), per)
    M = centres[labels] / np.linalg.norm(centres[labels], axis=1, keepdims=True)
    M = M + spread * rng.normal(size=M.shape)
    perm = rng.permutation(len(labels))  # so clusters are not contiguous rows
    M, labels = M[perm], labels[perm]
    return M / np.linalg.norm(M, axis=1, keepdims=True), labels


# ------------------------------------------------------------------------------ ARI


def test_ari_identical_and_relabelled():
    a = [0, 0, 1, 1, 2, 2, 2]
    assert adjusted_rand_index(a, a) == 1.0
    assert adjusted_rand_index(a, ["x", "x", "y", "y", "z", "z", "z"]) == 1.0
    assert adjusted_rand_index([0] * 5, [1] * 5) == 1.0  # both all-in-one
    assert adjusted_rand_index(range(5), range(5, 10)) == 1.0  # both all singletons


def test_ari_hand_computed():
    # a = {0,1,2}{3,4,5}, b = {0,1}{2,3}{4,5}. Contingency [[2,1,0],[0,1,2]]:
    # sum C(n_ij,2) = 1 + 1 = 2; rows C(3,2)*2 = 6; cols C(2,2)*3 = 3; C(6,2) = 15;
    # expected = 6*3/15 = 1.2; max = (6+3)/2 = 4.5; ARI = (2-1.2)/(4.5-1.2) = 8/33.
    assert adjusted_rand_index([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(8 / 33)
    # the documented textbook pairs: 4/7 and -1/2
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(4 / 7)
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    assert adjusted_rand_index([0, 0, 0, 0], [0, 1, 2, 3]) == 0.0


def test_ari_random_labelings_near_zero():
    rng = np.random.default_rng(0)
    vals = [adjusted_rand_index(rng.integers(0, 10, 171), rng.integers(0, 10, 171))
            for _ in range(200)]
    assert abs(np.mean(vals)) < 0.01
    with pytest.raises(EmolensError):
        adjusted_rand_index([0, 1], [0, 1, 2])


# ------------------------------------------------------------------------------ cosine, order


def test_cosine_matrix_values():
    C = cosine_matrix([[2.0, 0.0], [1.0, 1.0], [-3.0, 0.0]])
    assert C == pytest.approx(np.array([[1, 0.5 ** 0.5, -1], [0.5 ** 0.5, 1, -(0.5 ** 0.5)],
                                        [-1, -(0.5 ** 0.5), 1]]))
    with pytest.raises(EmolensError):
        cosine_matrix([[1.0, 0.0], [0.0, 0.0]])


def test_cluster_order_keeps_planted_blocks_contiguous():
    M, labels = _planted(n_clusters=4, per=6)
    order = cluster_order(M)
    assert sorted(order) == list(range(len(labels)))
    seq = labels[order]
    # each cluster's members form one contiguous run: exactly 3 label changes for 4 blocks
    assert int((seq[1:] != seq[:-1]).sum()) == 3


# ------------------------------------------------------------------------------ k-means


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_kmeans_recovers_planted_clusters(metric):
    M, labels = _planted(n_clusters=6, per=10, seed=3)
    res = kmeans(M, k=6, seed=0, n_init=10, metric=metric)
    assert adjusted_rand_index(res.labels, labels) == 1.0
    assert res.labels.shape == (60,) and res.centers.shape == (6, 32)
    # tight clusters: small objective (squared distance is about 2 x (1 - cosine) here)
    assert res.inertia < 60 * (0.05 if metric == "cosine" else 0.1)
    again = kmeans(M, k=6, seed=0, n_init=10, metric=metric)
    assert np.array_equal(again.labels, res.labels)


def test_kmeans_errors():
    M, _ = _planted(n_clusters=2, per=3)
    with pytest.raises(EmolensError):
        kmeans(M, k=7)
    with pytest.raises(EmolensError):
        kmeans(M, k=2, metric="manhattan")


def test_compare_with_study_clusters():
    names = [e for ms in EMOTION_CLUSTERS.values() for e in ms]
    study = [c for c, ms in EMOTION_CLUSTERS.items() for _ in ms]
    exact = compare_with_study_clusters(names, study, n_perm=200, seed=0)
    assert (exact.ari, exact.n, exact.n_clusters) == (1.0, 171, 10)
    assert abs(exact.baseline_mean) < 0.02 and exact.baseline_p95 < 0.06
    assert exact.p == pytest.approx(1 / 201)
    rng = np.random.default_rng(1)
    shuffled = compare_with_study_clusters(names, rng.permutation(study), n_perm=200)
    assert abs(shuffled.ari) < 0.06 and shuffled.p > 0.05
    # merging two study clusters costs agreement but stays far above chance
    merged = ["Joy+Calm" if s in ("Exuberant Joy", "Peaceful Contentment") else s for s in study]
    part = compare_with_study_clusters(names, merged, n_perm=50)
    assert 0.5 < part.ari < 1.0
    with pytest.raises(CorpusError):
        compare_with_study_clusters(["happy", "not-an-emotion"], [0, 1])


# ------------------------------------------------------------------------------ PCA


def _planted_pca(n=60, d=20, sds=(3.0, 1.0), seed=0):
    rng = np.random.default_rng(seed)
    axes = np.linalg.qr(rng.normal(size=(d, len(sds))))[0].T  # orthonormal rows
    z = rng.normal(size=(n, len(sds)))
    z = z - z.mean(0)
    z = np.linalg.qr(z)[0] * math.sqrt(n)  # exactly centred, orthogonal, unit variance
    X = (z * np.array(sds)) @ axes + rng.normal(size=d)  # + a common offset
    return X, axes, z


def test_pca_recovers_planted_axes_and_variance():
    X, axes, z = _planted_pca()
    p = pca(X, 2)
    assert p.explained_variance_ratio == pytest.approx([0.9, 0.1], abs=1e-10)
    for j in range(2):
        assert abs(p.components[j] @ axes[j]) == pytest.approx(1.0, abs=1e-10)
    assert np.allclose(np.abs(p.scores), np.abs(z * np.array([3.0, 1.0])), atol=1e-8)
    scores, comps, evr = p  # unpacks as (scores, components, explained variance ratio)
    assert np.allclose((X - X.mean(0)) @ comps.T, scores)
    with pytest.raises(EmolensError):
        pca(X, 0)


def test_pca_orientation_convention():
    X, _, _ = _planted_pca(n=6, sds=(3.0, 1.0), seed=2)
    names = ["happy", "sad", "outraged", "serene", "calm", "afraid"]
    a = pca(X, 2, emotions=names)
    b = pca(-X, 2, emotions=names)  # the same data mirrored: the convention undoes it
    assert a.scores[0, 0] > 0 and a.scores[2, 1] > a.scores[3, 1]
    assert np.allclose(a.scores, b.scores) and np.allclose(a.components, -b.components)
    _, signs = orient_pcs(pca(X, 2), ["x"] * 6)  # no anchors present: nothing flipped
    assert signs.tolist() == [1.0, 1.0]


# ------------------------------------------------------------------------------ norms


def test_norm_correlations_uses_rated_emotions_only():
    norms = load_norms()
    names = list(EMOTIONS)
    rng = np.random.default_rng(0)
    val = np.array([norms.valence.get(e, np.nan) for e in names])
    aro = np.array([norms.arousal[e] for e in names])
    noise = rng.normal(size=(171, 3))
    pc1 = np.where(np.isnan(val), noise[:, 0], val) + 0.5 * noise[:, 1]
    pc2 = aro + 0.5 * noise[:, 2]
    S = np.column_stack([pc1, pc2, noise[:, 0]])
    nc = norm_correlations(S, names, norms)
    assert nc.pc1_valence.n == len(norms.valence) == 139
    assert nc.pc2_arousal.n == 171
    assert nc.pc1_valence.r > 0.9 and nc.pc2_arousal.r > 0.8
    assert len(nc.valence) == len(nc.arousal) == 3
    assert "not human norms" in nc.arousal_source
    # the same scores with both signs flipped: the convention restores them, same r
    flipped = norm_correlations(-S, names, norms)
    assert flipped.pc1_valence.r == pytest.approx(nc.pc1_valence.r)
    assert flipped.pc2_arousal.r == pytest.approx(nc.pc2_arousal.r)


def test_norm_correlations_reports_negative_r_honestly():
    # "happy" scores positive on PC1 but the ratings run the other way: r must stay negative
    names = ["happy", "sad", "calm", "angry", "outraged", "serene"]
    S = np.array([[1.0, 0.0], [2.0, 0.1], [3.0, 0.2], [4.0, 0.3], [5.0, 1.0], [6.0, -1.0]])
    valence = {n: -float(i) for i, n in enumerate(names)}
    arousal = {"outraged": 1.0, "serene": 9.0, "happy": 5.0, "sad": 4.0}
    nc = norm_correlations(S, names, {"valence": valence, "arousal": arousal})
    assert nc.signs.tolist() == [1.0, 1.0]
    assert nc.pc1_valence.r == pytest.approx(-1.0) and nc.pc1_valence.n == 6
    assert nc.pc2_arousal.n == 4 and nc.pc2_arousal.r < -0.9


def test_norm_correlations_accepts_pca_result():
    X, _, _ = _planted_pca(n=8, seed=4)
    names = ["happy", "sad", "calm", "angry", "outraged", "serene", "proud", "afraid"]
    p = pca(X, 2)
    nc = norm_correlations(p, names, {"valence": {n: i for i, n in enumerate(names)}})
    assert isinstance(p, PCA) and nc.pc1_valence.n == 8 and nc.pc2_arousal.n == 0


# ------------------------------------------------------------------------------ best axis


def test_best_axis_recovers_planted_direction():
    rng = np.random.default_rng(0)
    S = rng.normal(size=(45, 3))
    true = np.array([0.6, 0.0, -0.8])
    y = 2.0 + S @ true + 0.05 * rng.normal(size=45)
    y[[3, 10]] = np.nan  # unrated emotions are dropped
    b = best_axis(S, y)
    assert b.n == 43
    assert b.direction == pytest.approx(true, abs=0.02)
    assert b.r > 0.99 and b.r_loo > 0.99 and b.r_loo <= b.r


def test_best_axis_loo_deflates_noise():
    rng = np.random.default_rng(1)
    r, r_loo = [], []
    for _ in range(20):
        b = best_axis(rng.normal(size=(30, 3)), rng.normal(size=30))
        r.append(b.r)
        r_loo.append(b.r_loo)
    # in-sample multiple R on pure noise is inflated (E ~ sqrt(3/29)); LOO is not
    assert np.mean(r) > 0.2
    assert np.mean(r_loo) < 0.05
    assert all(lo < hi for lo, hi in zip(r_loo, r, strict=True))


def test_best_axis_loo_matches_explicit_refits():
    rng = np.random.default_rng(2)
    S = rng.normal(size=(12, 2))
    y = S[:, 0] + rng.normal(size=12)
    preds = []
    for i in range(12):
        keep = np.arange(12) != i
        X = np.column_stack([np.ones(11), S[keep]])
        coef = np.linalg.lstsq(X, y[keep], rcond=None)[0]
        preds.append(coef[0] + S[i] @ coef[1:])
    expected = np.corrcoef(preds, y)[0, 1]
    assert best_axis(S, y).r_loo == pytest.approx(expected, abs=1e-10)
    with pytest.raises(EmolensError):
        best_axis(S[:3], y[:3])


# ------------------------------------------------------------------------------ RSA


def test_rsa_known_values():
    rng = np.random.default_rng(0)
    base = cosine_matrix(rng.normal(size=(20, 8)))
    noisy = base + 0.3 * np.triu(rng.normal(size=base.shape), 1)
    noisy = np.triu(noisy, 1) + np.triu(noisy, 1).T + np.eye(20)
    res = rsa({"L4": base, "L8": base.copy(), "L12": -base, "L16": noisy})
    assert res.layers == ["L4", "L8", "L12", "L16"]
    R = res.matrix
    assert R.shape == (4, 4) and np.allclose(R, R.T) and np.allclose(np.diag(R), 1.0)
    assert R[0, 1] == pytest.approx(1.0) and R[0, 2] == pytest.approx(-1.0)
    iu = np.triu_indices(20, 1)
    assert R[0, 3] == pytest.approx(np.corrcoef(base[iu], noisy[iu])[0, 1])
    assert 0.3 < R[0, 3] < 0.99
    with pytest.raises(EmolensError):
        rsa({1: base, 2: base[:5, :5]})
