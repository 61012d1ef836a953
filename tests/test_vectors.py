"""Tests of emolens.vectors (and the statistics that build them) on data with known answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import emolens.vectors as vmod
from emolens.errors import (
    CorpusError,
    EmolensError,
    LayerError,
    SteeringError,
    VectorFileError,
)
from emolens.extract import NeutralStats, StoryStats, build_vectors, classify, neutral_pcs
from emolens.modelcheck import check_model
from emolens.stats import topk_accuracy
from emolens.testing import tiny_lm, tiny_vectors
from emolens.vectors import Direction, EmotionVectors

SRC = str(Path(vmod.__file__).resolve().parents[1])
MODEL = {"name": "toy/llama-tiny", "architecture": "llama", "n_layers": 6, "hidden_size": 32,
         "vocab_size": 1000, "config_hash": "c0ffee"}


def _orthonormal(rng: np.random.Generator, d: int, k: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(d, k)))
    return q.T  # [k, d]


def _whitened(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """[n, k] with zero mean and identity covariance exactly (population, 1/n)."""
    z = rng.normal(size=(n, k))
    z -= z.mean(axis=0)
    q, _ = np.linalg.qr(z)
    return q * np.sqrt(n)


# --------------------------------------------------------------------------------------------
# planted directions
# --------------------------------------------------------------------------------------------


def _planted_world(seed: int = 0, d: int = 32, n_emotions: int = 6, texts: int = 40,
                   layers: tuple[int, ...] = (2, 4)):
    rng = np.random.default_rng(seed)
    basis = _orthonormal(rng, d, n_emotions + 1)
    nuisance = basis[0]
    q = basis[1:]
    planted = q - q.mean(axis=0)  # centred, so emotion mean minus grand mean recovers it
    planted /= np.linalg.norm(planted, axis=1, keepdims=True)
    offset = rng.normal(size=d) * 5.0
    labels = [f"emo{i}" for i in range(n_emotions)]
    stats = StoryStats.empty(labels, layers, d)
    for e, label in enumerate(labels):
        coef = rng.normal(scale=10.0, size=(texts, len(layers)))
        pooled = (offset + 3.0 * planted[e] + coef[..., None] * nuisance
                  + rng.normal(scale=0.3, size=(texts, len(layers), d)))
        stats.add_batch([label] * texts, pooled, n_tokens=np.full(texts, 60))
    neutral = NeutralStats.empty(layers, d)
    for _ in range(4):
        n = 300
        coef = rng.normal(scale=10.0, size=(len(layers), n))
        acts = (offset + coef[..., None] * nuisance
                + rng.normal(scale=0.3, size=(len(layers), n, d)))
        neutral.add_tokens(acts)
    return stats, neutral, planted, nuisance


def test_planted_directions_recovered_and_nuisance_removed():
    stats, neutral, planted, nuisance = _planted_world()
    info = dict(MODEL)
    vecs = build_vectors(stats, neutral, variance=0.5, model_info=info, token_skip=50,
                         corpus_fingerprint="sha256:abc")
    assert vecs.emotions == stats.labels and vecs.layers == (2, 4)
    assert vecs.directions.shape == (6, 2, 32) and vecs.directions.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs.directions, axis=2), 1.0, atol=1e-6)
    for layer in vecs.layers:
        m = vecs.matrix(layer).astype(np.float64)
        cos = np.sum(m * planted, axis=1)
        assert cos.min() > 0.95, cos
        # the big neutral nuisance is projected out
        assert np.abs(m @ nuisance).max() < 0.05
        # ... while the raw difference of means still carries it
        raw = vecs.raw[:, vecs.layer_index(layer)].astype(np.float64)
        raw_cos = (raw @ nuisance) / np.linalg.norm(raw, axis=1)
        assert np.abs(raw_cos).max() > 0.2
    assert vecs.meta["denoise"] == {"variance": 0.5, "n_components": {"2": 1, "4": 1},
                                    "neutral_tokens": 1200}
    assert vecs.meta["n_texts"] == {f"emo{i}": 40 for i in range(6)}
    assert vecs.meta["n_tokens"]["emo0"] == 40 * 60
    # residual scale: the nuisance (std 10) dominates token norms of ~sqrt(25*32 + 100)
    assert 20 < vecs.residual_scale(2) < 40
    assert vecs.residual_scale(2, robust=False) == pytest.approx(float(vecs.norm_mean[0]))


def test_without_neutral_no_denoising_and_norms_missing():
    stats, _, _, _ = _planted_world()
    vecs = build_vectors(stats, None, model_info=MODEL, token_skip=50, corpus_fingerprint="x")
    np.testing.assert_allclose(vecs.raw, (stats.means() - stats.means().mean(0)), atol=1e-4)
    unit = vecs.raw / np.linalg.norm(vecs.raw, axis=2, keepdims=True)
    np.testing.assert_allclose(vecs.directions, unit, atol=1e-6)
    assert vecs.meta["denoise"]["n_components"] == {"2": 0, "4": 0}
    with pytest.raises(SteeringError, match="no usable median residual norm for layer 2"):
        vecs.residual_scale(2)


def test_variance_zero_keeps_raw_direction():
    stats, neutral, _, _ = _planted_world()
    vecs = build_vectors(stats, neutral, variance=0.0, model_info=MODEL, token_skip=0,
                         corpus_fingerprint="x")
    unit = vecs.raw / np.linalg.norm(vecs.raw, axis=2, keepdims=True)
    np.testing.assert_allclose(vecs.directions, unit, atol=1e-6)
    assert vecs.meta["denoise"]["n_components"] == {"2": 0, "4": 0}


# --------------------------------------------------------------------------------------------
# neutral PCA
# --------------------------------------------------------------------------------------------


def _known_spectrum(seed: int = 1, d: int = 16, n: int = 400):
    rng = np.random.default_rng(seed)
    lam = np.array([8.0, 4.0, 2.0, 1.0, 1.0] + [0.0] * (d - 5))  # total 16
    q = _orthonormal(rng, d, d)  # rows: the true PCs
    z = _whitened(rng, n, 5)
    acts = z * np.sqrt(lam[:5]) @ q[:5] + rng.normal(size=d)  # plus a mean offset
    ns = NeutralStats.empty([7], d)
    ns.add_tokens(acts[None])
    return ns, q, lam


@pytest.mark.parametrize(("variance", "k"), [
    (0.0, 0), (0.3, 1), (0.5, 1), (0.51, 2), (0.75, 2), (0.76, 3), (0.875, 3), (0.9, 4),
    (1.0, 5),
])
def test_variance_threshold_picks_known_k(variance, k):
    ns, q, _ = _known_spectrum()
    pcs = neutral_pcs(ns, 0, variance)
    assert pcs.shape == (k, 16)
    if k:
        np.testing.assert_allclose(pcs @ pcs.T, np.eye(k), atol=1e-10)
    # the leading three eigenvalues are distinct, so those PCs match up to sign
    for i in range(min(k, 3)):
        assert abs(pcs[i] @ q[i]) == pytest.approx(1.0, abs=1e-8)


def test_projection_removes_exactly_the_top_k_subspace():
    ns, q, _ = _known_spectrum()
    d = 16
    rng = np.random.default_rng(5)
    labels = ["a", "b", "c", "d"]
    stats = StoryStats.empty(labels, [7], d)
    for label in labels:
        stats.add(label, rng.normal(size=(1, d)))
    info = dict(MODEL, n_layers=8, hidden_size=d)
    vecs = build_vectors(stats, ns, variance=0.75, model_info=info, token_skip=0,
                         corpus_fingerprint="x")
    assert vecs.meta["denoise"]["n_components"] == {"7": 2}
    m = vecs.matrix(7).astype(np.float64)
    np.testing.assert_allclose(m @ q[:2].T, 0.0, atol=1e-6)  # orthogonal to the removed PCs
    # the rest is untouched: direction == normalised (raw minus its top-2 projection)
    raw = vecs.raw[:, 0].astype(np.float64)
    expect = raw - raw @ q[:2].T @ q[:2]
    expect /= np.linalg.norm(expect, axis=1, keepdims=True)
    np.testing.assert_allclose(m, expect, atol=1e-5)
    assert abs(m @ q[2:].T).max() > 0.1  # components outside the top-2 survive


def test_neutral_pcs_errors():
    ns = NeutralStats.empty([0], 4)
    ns.add_tokens(np.ones((1, 1, 4)))
    with pytest.raises(CorpusError, match="at least 2"):
        neutral_pcs(ns, 0, 0.5)
    with pytest.raises(EmolensError, match="variance"):
        neutral_pcs(ns, 0, 1.5)
    const = NeutralStats.empty([0], 4)
    const.add_tokens(np.ones((1, 5, 4)))
    assert neutral_pcs(const, 0, 0.5).shape == (0, 4)  # nothing varies, nothing removed


# --------------------------------------------------------------------------------------------
# shard and merge
# --------------------------------------------------------------------------------------------


def test_story_stats_shard_and_merge_equals_one_pass():
    rng = np.random.default_rng(2)
    labels = ["joy", "fear", "calm"]
    layers = (0, 3, 5)
    pooled = rng.normal(size=(30, 3, 8)) * 100
    texts = [labels[i % 3] for i in range(30)]
    toks = rng.integers(50, 400, size=30)
    one = StoryStats.empty(labels, layers, 8)
    for lab, p, t in zip(texts, pooled, toks, strict=False):
        one.add(lab, p, n_tokens=int(t))
    shards = []
    for part in np.array_split(np.arange(30), 4):
        s = StoryStats.empty(labels, layers, 8)
        s.add_batch([texts[i] for i in part], pooled[part], n_tokens=toks[part])
        shards.append(s)
    merged = shards[0].merge(shards[1]).merge(shards[2].merge(shards[3]))
    assert merged.labels == one.labels
    np.testing.assert_allclose(merged.sums, one.sums, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(merged.counts, [10, 10, 10])
    np.testing.assert_array_equal(merged.token_counts, one.token_counts)
    np.testing.assert_allclose(merged.means(), one.means(), rtol=1e-12, atol=1e-9)
    expect = np.stack([pooled[[i for i in range(30) if texts[i] == lab]].mean(0)
                       for lab in labels])
    np.testing.assert_allclose(one.means(), expect, rtol=1e-12, atol=1e-9)


def test_story_stats_merge_label_union_and_mismatch():
    a = StoryStats.empty(["x", "y"], [1], 2)
    a.add("x", np.array([[1.0, 2.0]]))
    b = StoryStats.empty(["y", "z"], [1], 2)
    b.add_batch(["z", "z", "y"], np.array([[[1.0, 0.0]], [[3.0, 0.0]], [[0.0, 5.0]]]))
    m = a.merge(b)
    assert m.labels == ("x", "y", "z")
    np.testing.assert_array_equal(m.counts, [1, 1, 2])
    np.testing.assert_allclose(m.means()[:, 0], [[1, 2], [0, 5], [2, 0]])
    with pytest.raises(VectorFileError, match="cannot merge"):
        a.merge(StoryStats.empty(["x"], [2], 2))
    with pytest.raises(VectorFileError, match="d=3"):
        a.merge(StoryStats.empty(["x"], [1], 3))
    with pytest.raises(CorpusError, match="no texts for label"):
        StoryStats.empty(["x", "y"], [1], 2).means()
    with pytest.raises(CorpusError, match="did you mean x"):
        a.add("xx", np.zeros((1, 2)))
    with pytest.raises(VectorFileError, match="shape"):
        a.add("x", np.zeros((2, 2)))
    with pytest.raises(CorpusError, match="NaN"):
        a.add("x", np.full((1, 2), np.nan))


def test_neutral_stats_shard_and_merge_equals_one_pass():
    rng = np.random.default_rng(3)
    acts = rng.normal(size=(2, 101, 6)) * np.array([1, 2, 3, 4, 5, 50.0])
    one = NeutralStats.empty([4, 9], 6)
    one.add_tokens(acts)
    parts = [NeutralStats.empty([4, 9], 6) for _ in range(3)]
    for p, idx in zip(parts, np.array_split(np.arange(101), 3), strict=False):
        for chunk in np.array_split(idx, 2):  # several texts per shard
            p.add_tokens(acts[:, chunk])
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert merged.n_tokens == one.n_tokens == 101
    np.testing.assert_allclose(merged.sum, one.sum, rtol=1e-12)
    np.testing.assert_allclose(merged.sum_outer, one.sum_outer, rtol=1e-12)
    np.testing.assert_array_equal(merged.norm_hist, one.norm_hist)
    np.testing.assert_allclose(merged.norm_sum, one.norm_sum)
    mean, median = merged.norm_stats()
    true_norms = np.linalg.norm(acts, axis=2)
    # the median comes from a fixed log-binned histogram (memory that does not grow)
    np.testing.assert_allclose(median, np.median(true_norms, axis=1), rtol=5e-3)
    np.testing.assert_allclose(mean, true_norms.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(merged.covariance(1), np.cov(acts[1].T, bias=True), atol=1e-9)
    with pytest.raises(VectorFileError, match="cannot merge"):
        one.merge(NeutralStats.empty([4], 6))


def test_stats_save_load_round_trip(tmp_path):
    stats, neutral, _, _ = _planted_world(texts=5)
    stats.save(tmp_path / "s.safetensors")
    neutral.save(tmp_path / "n.safetensors")
    s2 = StoryStats.load(tmp_path / "s.safetensors")
    n2 = NeutralStats.load(tmp_path / "n.safetensors")
    assert s2.labels == stats.labels and s2.layers == stats.layers
    np.testing.assert_array_equal(s2.sums, stats.sums)
    np.testing.assert_array_equal(s2.token_counts, stats.token_counts)
    assert n2.n_tokens == neutral.n_tokens
    np.testing.assert_array_equal(n2.sum_outer, neutral.sum_outer)
    np.testing.assert_array_equal(n2.norm_hist, neutral.norm_hist)
    np.testing.assert_allclose(n2.norm_sum, neutral.norm_sum)
    with pytest.raises(VectorFileError, match="not story_stats"):
        StoryStats.load(tmp_path / "n.safetensors")
    with pytest.raises(VectorFileError, match="not emotion_vectors"):
        EmotionVectors.load(tmp_path / "s.safetensors")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------------------------
# the vector file
# --------------------------------------------------------------------------------------------


@pytest.fixture
def vecs() -> EmotionVectors:
    stats, neutral, _, _ = _planted_world(texts=8)
    return build_vectors(stats, neutral, model_info=MODEL, token_skip=50,
                         corpus_fingerprint="sha256:feed", extra_meta={"note": "unit test"})


_CHILD = """
import hashlib, json, sys
from emolens.vectors import EmotionVectors
v = EmotionVectors.load(sys.argv[1])
h = hashlib.sha256(v.directions.tobytes() + v.raw.tobytes() + v.norm_median.tobytes()
                   + v.norm_mean.tobytes()).hexdigest()
print(json.dumps({"meta": v.meta, "emotions": v.emotions, "layers": v.layers, "sha": h,
                  "scale": v.residual_scale(4), "default": v.default_layer}))
"""


def test_save_load_round_trip_in_fresh_process(vecs, tmp_path):
    path = vecs.save(tmp_path / "sub" / "v.safetensors")
    env = dict(os.environ, PYTHONPATH=SRC)
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True,
                         text=True, env=env, check=True, timeout=120)
    got = json.loads(out.stdout)
    import hashlib
    sha = hashlib.sha256(vecs.directions.tobytes() + vecs.raw.tobytes()
                         + vecs.norm_median.tobytes() + vecs.norm_mean.tobytes()).hexdigest()
    assert got["sha"] == sha
    assert got["meta"] == vecs.meta
    assert tuple(got["emotions"]) == vecs.emotions and tuple(got["layers"]) == vecs.layers
    assert got["scale"] == pytest.approx(vecs.residual_scale(4))
    assert got["default"] == vecs.default_layer == 4  # 2/3 of 6 layers
    m = vecs.meta
    assert m["format_version"] == 1 and m["model"] == MODEL and m["token_skip"] == 50
    assert m["corpus_fingerprint"] == "sha256:feed" and m["note"] == "unit test"
    assert "hidden_states[i+1]" in m["layer_convention"]
    assert m["recommended_layer"] is None and m["layer_scores"] is None
    assert isinstance(m["created"], str) and isinstance(m["emolens_version"], str)
    # in-process load with the right model passes
    same = EmotionVectors.load(path, expect_model=dict(MODEL, name="/local/dir"))
    np.testing.assert_array_equal(same.directions, vecs.directions)


def test_load_refuses_other_model(vecs, tmp_path):
    path = vecs.save(tmp_path / "v.safetensors")
    other = {"name": "Qwen/Qwen2.5-0.5B", "architecture": "qwen2", "n_layers": 24,
             "hidden_size": 896, "vocab_size": 151936, "config_hash": "beef"}
    with pytest.raises(VectorFileError) as err:
        EmotionVectors.load(path, expect_model=other)
    msg = str(err.value)
    assert "vectors were built for toy/llama-tiny (llama, 6 layers, d=32" in msg
    assert "not for Qwen/Qwen2.5-0.5B (qwen2, 24 layers, d=896" in msg
    assert "\n" not in msg
    with pytest.raises(VectorFileError, match="differs in config_hash"):
        EmotionVectors.load(path, expect_model=dict(MODEL, config_hash="other"))


def test_load_refuses_garbage(vecs, tmp_path):
    cases = {
        "missing.safetensors": None,
        "empty.safetensors": b"",
        "random.safetensors": np.random.default_rng(0).bytes(4096),
        "json.safetensors": b'{"directions": [1, 2, 3]}',
        "huge_header.safetensors": (10**12).to_bytes(8, "little") + b"{}",
    }
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(VectorFileError) as err:
            EmotionVectors.load(tmp_path / name)
        assert "\n" not in str(err.value) and name in str(err.value)
    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(VectorFileError, match="not an emolens"):
        EmotionVectors.load(tmp_path / "plain.safetensors")
    header = dict(vecs.meta, kind="emotion_vectors", format_version=2,
                  emotions=list(vecs.emotions), layers=list(vecs.layers))
    tensors = {"directions": vecs.directions, "raw": vecs.raw, "norm_mean": vecs.norm_mean,
               "norm_median": vecs.norm_median}
    save_file(tensors, str(tmp_path / "v2.safetensors"), metadata={"emolens": json.dumps(header)})
    with pytest.raises(VectorFileError, match="format_version 2"):
        EmotionVectors.load(tmp_path / "v2.safetensors")
    header["format_version"] = 1
    save_file({k: v for k, v in tensors.items() if k != "raw"},
              str(tmp_path / "noraw.safetensors"), metadata={"emolens": json.dumps(header)})
    with pytest.raises(VectorFileError, match="lacks the tensor 'raw'"):
        EmotionVectors.load(tmp_path / "noraw.safetensors")
    save_file(tensors, str(tmp_path / "badjson.safetensors"), metadata={"emolens": "{nope"})
    with pytest.raises(VectorFileError, match="not valid JSON"):
        EmotionVectors.load(tmp_path / "badjson.safetensors")
    with pytest.raises(VectorFileError, match="not a file"):
        EmotionVectors.load(tmp_path)


def test_container_protocol_and_errors(vecs):
    assert len(vecs) == 6 and list(vecs) == list(vecs.emotions)
    assert "emo3" in vecs and "nope" not in vecs and ["x"] not in vecs
    with pytest.raises(SteeringError, match="close matches: emo1"):
        vecs["emo1x"]
    with pytest.raises(LayerError, match="layer 3 is not in this vector file; it has layers 2, 4"):
        vecs.matrix(3)
    cm = vecs.cosine_matrix(2)
    np.testing.assert_allclose(np.diag(cm), 1.0, atol=1e-6)
    np.testing.assert_allclose(cm, cm.T, atol=1e-12)
    # planted vectors are centred simplex directions: off-diagonal cosine -1/(E-1)
    off = cm[~np.eye(6, dtype=bool)]
    assert np.allclose(off, -0.2, atol=0.1) and abs(off.mean() + 0.2) < 0.02
    assert not vecs.directions.flags.writeable
    sub = vecs.subset(["emo4", "emo0"])
    assert sub.emotions == ("emo4", "emo0")
    np.testing.assert_array_equal(sub.matrix(4)[1], vecs.matrix(4)[0])
    with pytest.raises(SteeringError):
        vecs.subset(["emo0", "zzz"])
    tagged = vecs.with_meta(recommended_layer=2, layer_scores={2: 0.9, 4: 0.7})
    assert tagged.default_layer == 2 and vecs.default_layer == 4
    assert tagged.meta["layer_scores"] == {"2": 0.9, "4": 0.7}  # JSON form, as a reload gives
    assert vecs.meta["recommended_layer"] is None


def test_residual_scale_errors_on_zero_and_nan(vecs):
    zeroed = EmotionVectors(vecs.emotions, vecs.layers, vecs.directions, vecs.raw,
                            [0.0, 1.0], [0.0, np.nan], vecs.meta)
    with pytest.raises(SteeringError, match="layer 2"):
        zeroed.residual_scale(2)
    with pytest.raises(SteeringError, match="layer 4"):
        zeroed.residual_scale(4)
    assert zeroed.residual_scale(4, robust=False) == 1.0
    with pytest.raises(SteeringError, match="mean residual norm for layer 2"):
        zeroed.residual_scale(2, robust=False)
    with pytest.raises(LayerError):
        zeroed.residual_scale(5)


def test_direction_arithmetic(vecs):
    a, b = vecs["emo0"], vecs["emo1"]
    diff = a - b
    assert diff.name == "emo0-emo1" and diff.layers == (2, 4)
    np.testing.assert_allclose(diff.at(2), vecs.matrix(2)[0] - vecs.matrix(2)[1])
    assert (a + b).name == "emo0+emo1"
    assert (a - (b - a)).name == "emo0-(emo1-emo0)"
    assert (-a).name == "-emo0" and np.array_equal((-a).at(4), -vecs.matrix(4)[0])
    half = 0.5 * a
    assert half.name == "0.5*emo0"
    np.testing.assert_allclose(np.linalg.norm(half.at(2)), 0.5, atol=1e-6)
    np.testing.assert_allclose((a / 4).at(4), vecs.matrix(4)[0] / 4)
    unit = diff.normalized()
    assert unit.name == "emo0-emo1"
    np.testing.assert_allclose(np.linalg.norm(unit.at(4)), 1.0, atol=1e-6)
    with pytest.raises(SteeringError, match="zero"):
        (a - a).normalized()
    with pytest.raises(SteeringError):
        a / 0
    with pytest.raises(LayerError, match="has no layer 3"):
        a.at(3)
    other = Direction("x", {2: np.zeros(32, np.float32)})
    with pytest.raises(LayerError, match="cannot combine"):
        a + other
    a.per_layer[2][:] = 0  # a Direction is a copy: the file's arrays are untouched
    assert np.linalg.norm(vecs.matrix(2)[0]) == pytest.approx(1.0, abs=1e-6)


def test_build_vectors_validation():
    s = StoryStats.empty(["a", "b"], [0, 9], 4)
    s.add("a", np.ones((2, 4)))
    s.add("b", np.zeros((2, 4)))
    info = dict(MODEL, hidden_size=4)
    with pytest.raises(LayerError, match="beyond the model's 6 layers"):
        build_vectors(s, model_info=info, token_skip=0, corpus_fingerprint="x")
    s = StoryStats.empty(["a", "b"], [0], 4)
    s.add("a", np.ones((1, 4)))
    s.add("b", np.zeros((1, 4)))
    with pytest.raises(VectorFileError, match="hidden_size"):
        build_vectors(s, model_info=MODEL, token_skip=0, corpus_fingerprint="x")
    with pytest.raises(VectorFileError, match="lacks config_hash"):
        build_vectors(s, model_info={k: v for k, v in info.items() if k != "config_hash"},
                      token_skip=0, corpus_fingerprint="x")
    with pytest.raises(LayerError, match="neutral statistics lack layers 0"):
        build_vectors(s, NeutralStats.empty([1], 4), model_info=info, token_skip=0,
                      corpus_fingerprint="x")
    one = StoryStats.empty(["a"], [0], 4)
    one.add("a", np.ones((1, 4)))
    with pytest.raises(CorpusError, match="at least 2"):
        build_vectors(one, model_info=info, token_skip=0, corpus_fingerprint="x")


# --------------------------------------------------------------------------------------------
# classification helpers
# --------------------------------------------------------------------------------------------


def test_classify_and_topk_on_planted_data():
    stats, neutral, planted, _ = _planted_world(seed=4)
    vecs = build_vectors(stats, neutral, model_info=MODEL, token_skip=0, corpus_fingerprint="x")
    rng = np.random.default_rng(9)
    offset_center = (stats.sums[:, 0].sum(0) / stats.counts.sum())  # grand mean at layer 2
    true = np.repeat(np.arange(6), 5)
    pooled = (offset_center + 3.0 * planted[true] + rng.normal(scale=0.3, size=(30, 32)))
    scores = classify(pooled, vecs.matrix(2), offset_center)
    assert scores.shape == (30, 6)
    assert np.all(scores <= 1 + 1e-9) and np.all(scores >= -1 - 1e-9)
    assert topk_accuracy(scores, true, k=1).value == 1.0
    # uncentred, the shared offset dominates every cosine and accuracy collapses
    raw_scores = classify(pooled, vecs.matrix(2), None)
    assert np.ptp(raw_scores, axis=1).mean() < np.ptp(scores, axis=1).mean()
    s = np.array([[0.1, 0.5, 0.4], [0.3, 0.3, 0.1], [0.0, 0.2, 0.9]])
    assert topk_accuracy(s, [2, 1, 0], k=1).value == pytest.approx(1 / 3)  # a tie is a hit
    assert topk_accuracy(s, [2, 1, 0], k=2).value == pytest.approx(2 / 3)
    assert topk_accuracy(s, [2, 1, 0], k=3).value == 1.0
    np.testing.assert_array_equal(classify(np.zeros((1, 3)), np.eye(3), None), [[0, 0, 0]])


# --------------------------------------------------------------------------------------------
# a Direction knows its residual scale and its model
# --------------------------------------------------------------------------------------------


def test_indexing_gives_a_direction_with_the_files_scales_and_model(vecs):
    calm = vecs["emo0"]
    assert calm.layers == vecs.layers and calm.width == 32 and calm.model == MODEL
    for layer in vecs.layers:
        assert calm.residual_scale(layer) == pytest.approx(vecs.residual_scale(layer))
        assert calm.residual_scale(layer, robust=False) == pytest.approx(
            vecs.residual_scale(layer, robust=False))
    assert repr(calm) == "Direction('emo0', layers 2, 4, scaled)"


def test_arithmetic_keeps_scales_and_model(vecs):
    a, b = vecs["emo0"], vecs["emo1"]
    for d in (a - b, a + b, -a, 2 * a, a * 0.5, a / 3, (a - b).normalized()):
        assert d.scales == a.scales and d.mean_scales == a.mean_scales
        assert d.model == MODEL
    # scales are a property of the model's layer, not of the vector's length
    assert (3 * a).residual_scale(2) == a.residual_scale(2)
    # where only one operand has a scale, the result has none; differing scales average
    bare = Direction("bare", {2: np.ones(32, np.float32), 4: np.ones(32, np.float32)})
    assert (a - bare).scales == {} and (bare + a).scales == {}
    with pytest.raises(SteeringError, match="carries no median residual scale for layer 2"):
        (a - bare).residual_scale(2)
    other = Direction("o", {2: np.ones(32), 4: np.ones(32)}, scales={2: 10.0, 4: 20.0})
    mine = Direction("m", {2: np.ones(32), 4: np.ones(32)}, scales={2: 30.0})
    assert (other - mine).scales == {2: 20.0}


def test_direction_scales_are_checked_at_construction():
    with pytest.raises(SteeringError, match="positive finite"):
        Direction("x", {1: np.ones(3)}, scales={1: 0.0})
    with pytest.raises(SteeringError, match="positive finite"):
        Direction("x", {1: np.ones(3)}, mean_scales={1: float("nan")})
    with pytest.raises(SteeringError, match="names layer 2, which the direction lacks"):
        Direction("x", {1: np.ones(3)}, scales={2: 1.0})
    assert Direction("x", {1: np.ones(3)}, scales={1: 4}).residual_scale(1) == 4.0


def test_missing_norms_give_an_unscaled_direction(vecs):
    no_norms = EmotionVectors(vecs.emotions, vecs.layers, vecs.directions, vecs.raw,
                              [np.nan, 2.0], [0.0, 2.0], vecs.meta)
    d = no_norms["emo0"]
    assert d.scales == {4: 2.0} and d.mean_scales == {4: 2.0}
    with pytest.raises(SteeringError, match="layer 2"):
        d.residual_scale(2)


def test_random_direction_is_a_scaled_unit_control(vecs):
    r = vecs.random_direction(seed=3)
    assert r.layers == vecs.layers and r.scales == vecs["emo0"].scales
    np.testing.assert_allclose([np.linalg.norm(r.at(x)) for x in r.layers], 1.0, atol=1e-6)
    assert not np.allclose(r.at(2), vecs.random_direction(seed=4).at(2))


# --------------------------------------------------------------------------------------------
# the model check
# --------------------------------------------------------------------------------------------


def test_check_model_accepts_the_right_model_and_names_both_otherwise():
    lm = tiny_lm("llama")
    vecs = tiny_vectors(lm)
    vecs.check_model(lm)
    vecs.check_model(lm.fingerprint())
    vecs["calm"].check_model(lm)
    wide = tiny_lm("llama", d=64)
    for thing in (vecs, vecs["calm"], vecs["calm"] - vecs["sad"]):
        with pytest.raises(VectorFileError) as err:
            thing.check_model(wide)
        msg = str(err.value)
        assert "tiny-llama (llama, 4 layers, d=32" in msg and "d=64" in msg
        assert "differs in" in msg and "hidden_size" in msg and "\n" not in msg
    deeper = tiny_lm("llama", n_layers=6)
    with pytest.raises(VectorFileError, match="differs in n_layers"):
        vecs.check_model(deeper)
    with pytest.raises(VectorFileError, match="differs in config_hash"):
        vecs.check_model(dict(lm.fingerprint(), config_hash="0" * 16))
    with pytest.raises(VectorFileError, match="differs in architecture"):
        vecs.check_model(tiny_lm("qwen2"))
    with pytest.raises(VectorFileError, match="pass a model"):
        vecs.check_model(42)


def test_check_model_without_stored_identity_still_checks_width_and_depth():
    lm = tiny_lm("llama")
    bare = tiny_vectors(lm).with_meta(model=None)
    bare.check_model(lm)
    with pytest.raises(VectorFileError, match=r"an unnamed model \(d=32\), not for tiny-llama"):
        bare.check_model(tiny_lm("llama", d=64))
    with pytest.raises(VectorFileError, match="layer 3, beyond the 2 layers"):
        bare.check_model({"name": "shallow", "n_layers": 2, "hidden_size": 32})
    hand = Direction("hand", {1: np.ones(32, np.float32)})
    hand.check_width(32)
    hand.check_model(lm)
    with pytest.raises(VectorFileError, match="'hand' is 32 wide; the model's hidden size is 8"):
        hand.check_width(8)
    with pytest.raises(VectorFileError, match="direction 'hand' was built for"):
        hand.check_model({"name": "narrow", "hidden_size": 8})


def test_check_model_function_and_mixed_model_arithmetic():
    check_model(None, {"hidden_size": 3})  # nothing stored: nothing to compare
    check_model({"name": "a", "hidden_size": 3}, {"name": "b", "hidden_size": 3})
    a = Direction("a", {0: np.ones(4)}, model={"name": "m1", "config_hash": "x"})
    b = Direction("b", {0: np.ones(4)}, model={"name": "m2", "config_hash": "y"})
    with pytest.raises(VectorFileError, match="direction 'b' was built for m2"):
        a - b
    c = Direction("c", {0: np.ones(5)})
    with pytest.raises(SteeringError, match="4 wide"):
        a + c


def test_load_checks_against_a_model_object(tmp_path):
    lm = tiny_lm("llama")
    path = tiny_vectors(lm).save(tmp_path / "v.safetensors")
    assert len(EmotionVectors.load(path, expect_model=lm)) == 6
    with pytest.raises(VectorFileError, match="not for tiny-gpt2"):
        EmotionVectors.load(path, expect_model=tiny_lm("gpt2"))


# --------------------------------------------------------------------------------------------
# the header is validated before use
# --------------------------------------------------------------------------------------------


def _write_with_header(vecs, path, **changes):
    header = dict(vecs.meta, kind="emotion_vectors", format_version=1,
                  emotions=list(vecs.emotions), layers=list(vecs.layers))
    for key, value in changes.items():
        if value is _DROP:
            header.pop(key)
        else:
            header[key] = value
    tensors = {"directions": vecs.directions, "raw": vecs.raw, "norm_mean": vecs.norm_mean,
               "norm_median": vecs.norm_median}
    save_file(tensors, str(path), metadata={"emolens": json.dumps(header)})
    return path


_DROP = object()


@pytest.mark.parametrize(("change", "field", "expect"), [
    ({"emotions": 7}, "emotions", "a list of strings"),
    ({"emotions": ["a", 1, "c", "d", "e", "f"]}, "emotions", "a list of strings"),
    ({"layers": "2,4"}, "layers", "distinct non-negative integers"),
    ({"layers": [2, 4.5]}, "layers", "distinct non-negative integers"),
    ({"layers": [2, -4]}, "layers", "distinct non-negative integers"),
    ({"layers": [2, True]}, "layers", "distinct non-negative integers"),
    ({"model": "toy/llama-tiny"}, "model", "an object"),
    ({"model": dict(MODEL, hidden_size="32")}, "model.hidden_size", "a non-negative integer"),
    ({"model": dict(MODEL, n_layers=-6)}, "model.n_layers", "a non-negative integer"),
    ({"token_skip": "50"}, "token_skip", "a non-negative integer"),
    ({"recommended_layer": 2.0}, "recommended_layer", "a non-negative integer"),
    ({"layer_scores": [1, 2]}, "layer_scores", "an object"),
    ({"emotions": _DROP}, "emotions", "lacks"),
])
def test_load_refuses_header_fields_of_the_wrong_type(vecs, tmp_path, change, field, expect):
    path = _write_with_header(vecs, tmp_path / "bad.safetensors", **change)
    with pytest.raises(VectorFileError) as err:
        EmotionVectors.load(path)
    msg = str(err.value)
    assert str(path) in msg and f"'{field}'" in msg and expect in msg and "\n" not in msg


def test_load_refuses_deep_json_and_bad_tensors(vecs, tmp_path):
    tensors = {"directions": vecs.directions, "raw": vecs.raw, "norm_mean": vecs.norm_mean,
               "norm_median": vecs.norm_median}
    for depth in (40, 100_000):  # deeper than allowed; deeper than Python's recursion limit
        header = json.dumps(dict(vecs.meta, kind="emotion_vectors", format_version=1,
                                 emotions=list(vecs.emotions), layers=list(vecs.layers),
                                 note="DEEP"))
        header = header.replace('"DEEP"', "[" * depth + "1" + "]" * depth)
        path = tmp_path / f"deep{depth}.safetensors"
        save_file(tensors, str(path), metadata={"emolens": header})
        with pytest.raises(VectorFileError, match="nested deeper than 32 levels"):
            EmotionVectors.load(path)
    path = _write_with_header(vecs, tmp_path / "wrongcount.safetensors",
                              emotions=["a", "b"])
    with pytest.raises(VectorFileError, match=r"wrongcount.safetensors: directions have shape"):
        EmotionVectors.load(path)
    for name, value in (("nan", np.nan), ("zero", 0.0)):
        d = np.array(vecs.directions)
        d[3, 1] = value
        bad = EmotionVectors(vecs.emotions, vecs.layers, d, vecs.raw, vecs.norm_mean,
                             vecs.norm_median, vecs.meta)
        path = bad.save(tmp_path / f"{name}.safetensors")
        with pytest.raises(VectorFileError, match="'emo3' at layer 4"):
            EmotionVectors.load(path)
