"""The shrinkage-LDA read-out head: the maths on constructed data, its statistics, its file,
and the ``lda`` mode of the one read path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emolens.corpus import Corpus, Record
from emolens.errors import SteeringError, VectorFileError
from emolens.extract import collect, extract, merge_stats, vectors_from
from emolens.extract.scatter import ScatterAccumulator, ScatterStats
from emolens.head import choose_shrinkage, heldout_loglik, lda_weights, within_covariance
from emolens.readout import Reader, read
from emolens.testing import tiny_lm, tiny_vectors
from emolens.vectors import EmotionVectors


def _planted(n_per: int, seed: int, d: int = 40, n_classes: int = 6, nuisance: float = 8.0
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classes a small step apart, plus a nuisance every class varies along (a register or
    length effect) that leans towards one class's direction: the "one emotion dominates
    the raw scores" failure."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(99).normal(size=(n_classes, d)) * 0.25
    nuis = means[0] - means.mean(0) + np.random.default_rng(7).normal(size=d) * 0.3
    nuis /= np.linalg.norm(nuis)
    y = np.repeat(np.arange(n_classes), n_per)
    x = means[y] + rng.normal(size=(len(y), d)) * 0.5
    x += np.abs(rng.normal(size=(len(y), 1))) * nuisance * nuis
    return x, y, means


def _stats(x: np.ndarray, y: np.ndarray, n_classes: int):
    sums = np.stack([x[y == e].sum(0) for e in range(n_classes)])
    return sums, np.bincount(y, minlength=n_classes), x.T @ x


def test_lda_beats_plain_cosine_under_a_shared_nuisance_direction():
    x, y, _ = _planted(150, seed=0)
    test_x, test_y, _ = _planted(60, seed=1)
    sums, counts, scatter = _stats(x, y, 6)
    w, b, c = lda_weights(sums, counts, scatter, shrinkage=0.05)
    lda_acc = (((test_x - c) @ w.T + b).argmax(1) == test_y).mean()
    # the study's read-out: centred difference of means, cosine
    mu = sums / counts[:, None]
    dirs = mu - mu.mean(0)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    h = test_x - mu.mean(0)
    cos_acc = ((h / np.linalg.norm(h, axis=1, keepdims=True) @ dirs.T).argmax(1) == test_y).mean()
    assert lda_acc >= 0.88  # 0.90 with these seeds
    assert cos_acc <= 0.62  # 0.59: the nuisance pulls texts to class 0
    assert ((h / np.linalg.norm(h, axis=1, keepdims=True) @ dirs.T).argmax(1) == 0).mean() > 0.3


def test_within_covariance_equals_numpy_on_the_rows():
    x, y, _ = _planted(20, seed=3, d=5)
    resid = x - np.stack([x[y == e].mean(0) for e in range(6)])[y]
    want = resid.T @ resid / (len(y) - 6)
    np.testing.assert_allclose(within_covariance(*_stats(x, y, 6)), want, rtol=1e-9, atol=1e-9)


def test_heldout_loglik_from_statistics_equals_the_direct_sum():
    x, y, _ = _planted(10, seed=4, d=6)
    a, b = _stats(x[::2], y[::2], 6), _stats(x[1::2], y[1::2], 6)
    alpha = 0.2
    mu = a[0] / a[1][:, None]
    cov = within_covariance(*a)
    cov = (1 - alpha) * cov + alpha * np.trace(cov) / 6 * np.eye(6)
    r = x[1::2] - mu[y[1::2]]
    direct = -0.5 * (np.einsum("nd,de,ne->", r, np.linalg.inv(cov), r) / len(r)
                     + np.linalg.slogdet(cov)[1])
    assert heldout_loglik(a, b, alpha) == pytest.approx(direct, rel=1e-9)


def test_shrinkage_is_chosen_by_the_data_more_when_texts_are_few():
    few_x, few_y, _ = _planted(4, seed=5, d=40)  # 24 texts in 40 dimensions
    many_x, many_y, _ = _planted(400, seed=5, d=40)
    few, _ = choose_shrinkage([_stats(few_x[::2], few_y[::2], 6),
                               _stats(few_x[1::2], few_y[1::2], 6)])
    many, table = choose_shrinkage([_stats(many_x[::2], many_y[::2], 6),
                                    _stats(many_x[1::2], many_y[1::2], 6)])
    assert few > many
    assert many <= 0.1 and max(table.values()) == table[repr(many)]


def test_scatter_accumulator_equals_numpy_and_merges_exactly():
    x, y, _ = _planted(5, seed=6, d=4)
    labels = [f"e{k}" for k in range(6)]
    folds = [i % 2 for i in range(len(y))]
    whole = ScatterAccumulator(labels, [3], d=4)
    whole.add([labels[k] for k in y], torch.from_numpy(x)[:, None], folds)
    halves = []
    for part in (slice(0, 15), slice(15, None)):
        acc = ScatterAccumulator(labels, [3], d=4)
        acc.add([labels[k] for k in y[part]], torch.from_numpy(x[part])[:, None], folds[part])
        halves.append(acc.to_stats())
    merged = halves[0].merge(halves[1])
    np.testing.assert_allclose(merged.scatter, whole.to_stats().scatter, atol=1e-12)
    sums, counts, scatter = whole.to_stats().total(3)
    np.testing.assert_allclose(scatter, x.T @ x, atol=1e-10)
    assert counts.tolist() == np.bincount(y).tolist()
    with pytest.raises(VectorFileError, match="other labels"):
        merged.merge(ScatterStats.empty(labels[:2], [3], d=4))


def _corpus() -> Corpus:
    words = {"calm": "quiet slow tea rain window", "angry": "shout slam fist door red",
             "happy": "sun laugh dance bright song"}
    recs = [Record(id=f"story/{e}/{k}", kind="story", emotion=e,
                   text=f"{w.split()[k % 5]} and {w.split()[(k + 2) % 5]} again, {w} {k}.",
                   split="heldout" if k == 9 else "train")
            for e, w in words.items() for k in range(10)]
    recs.append(Record(id="neutral/0", kind="neutral", text="", turns=[
        {"role": "user", "content": "What is two plus two?"},
        {"role": "assistant", "content": "Four."}]))
    return Corpus(recs, "toy")


def test_extraction_fits_a_head_that_survives_shards_files_and_subsets(tmp_path):
    lm = tiny_lm("llama")
    corpus = _corpus()
    whole = collect(lm, corpus, [1, 2], token_skip=1, dtype=None)
    parts = [collect(lm, corpus, [1, 2], token_skip=1, shard=(i, 2), dtype=None)
             for i in range(2)]
    assert whole.scatter is not None and whole.scatter.layers == (1, 2)
    assert int(whole.scatter.counts.sum()) == 27 and (whole.scatter.counts > 0).all()
    back = merge_stats([type(p).load(p.save(tmp_path / f"p{i}")) for i, p in enumerate(parts)])
    np.testing.assert_allclose(back.scatter.scatter, whole.scatter.scatter, rtol=1e-9,
                               atol=1e-9)
    vecs = vectors_from(whole)
    assert vecs.head is not None and vecs.head.kind == "lda"
    assert set(vecs.head.meta["shrinkage"]) == {"1", "2"}
    loaded = EmotionVectors.load(vecs.save(tmp_path / "v.safetensors"))
    np.testing.assert_array_equal(loaded.head.weight, vecs.head.weight)
    assert loaded.head.meta["shrinkage"] == vecs.head.meta["shrinkage"]
    sub = loaded.subset(["happy", "calm"])
    np.testing.assert_array_equal(sub.head.weight[:, 0], vecs.head.weight[:, vecs.index("happy")])
    no_head = collect(lm, corpus, [1, 2], token_skip=1, dtype=None, head_layers=None)
    assert no_head.scatter is None and vectors_from(no_head).head is None


def test_lda_mode_reads_through_the_head_and_is_refused_without_one():
    lm = tiny_lm("llama")
    vecs = extract(lm, _corpus(), layers=[1, 2], token_skip=1, dtype=None, sweep=False)
    text = "rain and tea again, quiet slow tea rain window."
    got = read(lm, text, vecs, layer=2, mode="lda")
    batch, _ = lm.batch([text])
    h = lm.residuals(batch, [2])[2][0]
    w, b = vecs.head.at(2)
    want = (h[got.pool_start:].mean(0).numpy() - vecs.center[vecs.layer_index(2)]) @ w.T + b
    np.testing.assert_allclose(got.pooled, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got.scores, Reader(vecs, [2], "lda").scores(2, h).numpy(),
                               rtol=1e-5, atol=1e-5)
    assert got.mode == "lda"
    with pytest.raises(SteeringError, match="no read-out head"):
        read(lm, text, tiny_vectors(lm), mode="lda")


def test_auto_scores_tokens_in_study_units_and_pools_through_the_head():
    lm = tiny_lm("llama")
    vecs = extract(lm, _corpus(), layers=[1, 2], token_skip=1, dtype=None, sweep=False)
    text = "shout and fist again, shout slam fist door red."
    auto = read(lm, text, vecs, layer=2)
    assert (auto.mode, auto.pooled_mode) == ("centered", "lda")
    np.testing.assert_allclose(auto.scores, read(lm, text, vecs, layer=2, mode="centered").scores,
                               atol=1e-6)
    np.testing.assert_allclose(auto.pooled, read(lm, text, vecs, layer=2, mode="lda").pooled,
                               atol=1e-5)
    assert auto.to_json()["pooled_mode"] == "lda"
    plain = read(lm, text, tiny_vectors(lm), layer=2)  # no head: pooled as the tokens
    assert plain.pooled_mode == plain.mode == "centered"
