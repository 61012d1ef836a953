"""Validation analyses: each number checked against an independent slow computation on tiny
random models (vectors built from the tiny model's own activations), the pure maths on
constructed data, the CLI end to end, and (integration) the fast analyses on the default
model."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import torch
from conftest import tiny_lm, tiny_model, tiny_tokenizer
from scipy import stats as st

from emolens.concepts import (
    CORE_EMOTIONS,
    FEEL_PROMPTS,
    IMPLICIT_SCENARIOS,
    INTENSITY_EMOTIONS,
    INTENSITY_TEMPLATES,
)
from emolens.corpus import Corpus, Record
from emolens.errors import EmolensError, LayerError, VectorFileError
from emolens.experiments import heldout as H
from emolens.experiments import intensity as I
from emolens.experiments import logit_lens as LL
from emolens.experiments import scenarios as SC
from emolens.experiments import steering_validation as SV
from emolens.experiments.common import read_scores, resolve_layer
from emolens.experiments.registry import jsonable
from emolens.extract import (
    StoryStats,
    build_vectors,
    classify,
    neutral_statistics,
    pooled_features,
)
from emolens.lens import LanguageModel
from emolens.readout import read
from emolens.report.figures import figures_of, scenario_figure, steering_figure
from emolens.stats import binomial_p

# ---------------------------------------------------------------------------- fixtures


def story_texts() -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for i, e in enumerate(CORE_EMOTIONS):
        for k in range(3):
            texts.append(f"Story {k}: she felt {e} when the rain {'fell' if k else 'stopped'} "
                         f"on day {i}.")
            labels.append(e)
    return texts, labels


def make_vectors(lm: LanguageModel, token_skip: int = 2):
    """Vectors for the 12 core emotions from the tiny model's own activations."""
    layers = list(range(lm.n_layers))
    texts, labels = story_texts()
    means, counts, _ = pooled_features(lm, texts, layers, token_skip=token_skip)
    stats = StoryStats.empty(list(CORE_EMOTIONS), layers, lm.hidden_size)
    stats.add_batch(labels, means, counts)
    neutral = neutral_statistics(
        lm, ["The quick brown fox jumps over the lazy dog."] * 3 + ["Numbers 0123 and dots."],
        layers, token_skip=1)
    return build_vectors(stats, neutral, variance=0.3, model_info=lm.fingerprint(),
                         token_skip=token_skip, corpus_fingerprint="tiny")


@functools.cache
def _llama():
    lm = tiny_lm("llama")
    with torch.no_grad():  # a non-trivial final norm scale, so applying it matters
        g = torch.Generator().manual_seed(1)
        lm.parts.final_norm.weight.copy_(torch.rand(lm.hidden_size, generator=g) * 2 + 0.1)
    return lm, make_vectors(lm)


@pytest.fixture
def llama():
    return _llama()


# ---------------------------------------------------------------------------- pure maths


def test_zscore_and_diagonal_stats_known_answer():
    # probe 0 is high on every scenario (a "loving"-like probe): raw argmax always picks it,
    # z-scoring within each probe recovers the diagonal
    M = np.array([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.7, 0.2, 0.4]])
    s = SC.diagonal_stats(M, [0, 1, 2])
    assert s["raw_accuracy"].hits == 1 and s["z_accuracy"].hits == 3
    assert s["z_mean_rank"] == 1.0
    assert s["raw_mean_rank"] == pytest.approx((1 + 2 + 2) / 3)
    assert s["chance"] == pytest.approx(1 / 3)
    assert s["z_p"] == pytest.approx((1 / 3) ** 3)  # 3 of 3 at chance 1/3
    Z = SC.zscore_columns(M)
    assert np.allclose(Z.mean(0), 0) and np.allclose(Z.std(0), 1)


def test_sign_tally_and_binomial():
    hits, n, p = I.sign_tally([0.3, -0.1, 0.0, float("nan"), 0.5, -0.9], [1, -1, 1, 1, -1, -1])
    assert (hits, n) == (3, 6)
    assert p == pytest.approx(st.binom.sf(2, 6, 0.5))
    assert binomial_p(24, 24, 0.5) == pytest.approx(0.5 ** 24)


def test_classification_result_counts():
    emotions = ["happy", "sad", "calm", "bored"]
    S = np.array([[0.9, 0.1, 0.0, 0.0],    # happy -> happy
                  [0.2, 0.1, 0.0, 0.5],    # happy -> bored (171-way miss; core: happy wins)
                  [0.1, 0.0, 0.3, 0.2],    # sad   -> calm (miss)
                  [0.0, 0.1, 0.8, 0.0],    # calm  -> calm
                  [0.0, 0.0, 0.1, 0.9]])   # bored -> bored (not a core emotion)
    truth = ["happy", "happy", "sad", "calm", "bored"]
    r = H.classification_result(S, truth, emotions, core=["happy", "sad", "calm"])
    assert (r.top1.hits, r.top1.n) == (3, 5)
    assert r.top5.hits == 5 and r.chance_top1 == 0.25
    assert r.core_emotions == ("happy", "sad", "calm")
    assert (r.core_accuracy.hits, r.core_accuracy.n) == (3, 4)
    assert r.confusion.tolist() == [[2, 0, 0], [0, 0, 1], [0, 0, 1]]
    assert r.per_emotion_core["sad"].hits == 0 and r.per_emotion_top1["happy"].hits == 1
    json.dumps(r.to_json(), allow_nan=False)


def test_feel_matrix_stats():
    D = np.array([[1.0, -2.0, 0.0], [0.5, 0.2, -1.0], [0.0, 0.0, 3.0]])
    s = SV.feel_matrix_stats(D)
    assert s["diagonal_mean"] == pytest.approx((1.0 + 0.2 + 3.0) / 3)
    assert s["off_diagonal_mean"] == pytest.approx((-2.0 + 0.0 + 0.5 - 1.0 + 0.0 + 0.0) / 6)
    assert s["rows_peak_on_diagonal"].hits == 2  # row 1 peaks on column 0
    assert s["mean_abs"] == pytest.approx(np.abs(D).mean())


def test_names_emotion():
    assert LL.names_emotion(" Desper", "desperate")
    assert LL.names_emotion("anger", "angry")
    assert LL.names_emotion(" nervously", "nervous")
    assert not LL.names_emotion(" pro", "proud")  # too short a fragment
    assert not LL.names_emotion(" table", "calm")
    assert LL.names_emotion("sad", "sad")


def test_jsonable_nan_and_nested():
    out = jsonable({"a": (np.float32(1.5), np.int64(2)), "b": float("inf"),
                      "c": np.array([[np.nan]])})
    assert out == {"a": [1.5, 2], "b": None, "c": [[None]]}


# ---------------------------------------------------------------------------- model checks


def test_resolve_layer_errors(llama):
    lm, vecs = llama
    assert resolve_layer(lm, vecs) == vecs.default_layer
    assert resolve_layer(lm, vecs, 1) == 1 and resolve_layer(lm, vecs, "0.5") == 2
    with pytest.raises(LayerError):
        resolve_layer(lm, vecs, 9)
    other = tiny_lm("llama", d=48)
    with pytest.raises(VectorFileError):
        resolve_layer(other, vecs)


def test_heldout_matches_manual_classify(llama):
    lm, vecs = llama
    texts, labels = story_texts()
    corpus = Corpus([Record(id=f"s{i}", kind="story", emotion=e, text=t,
                            split="heldout" if i % 2 == 0 else "train")
                     for i, (t, e) in enumerate(zip(texts, labels, strict=True))])
    layer = 1
    r = H.heldout_classification(lm, vecs, corpus, layer=layer, batch_size=5)
    # slow path: one text at a time, vectors.classify with the training centre
    keep = [i for i in range(len(texts)) if i % 2 == 0]
    feats = np.stack([pooled_features(lm, [texts[i]], [layer], token_skip=2)[0][0, 0]
                      for i in keep])
    S = classify(feats, vecs.matrix(layer), vecs.center[vecs.layer_index(layer)])
    truth = np.array([vecs.index(labels[i]) for i in keep])
    pred = S.argmax(1)
    assert r.layer == layer and r.token_skip == 2
    assert (r.top1.hits, r.top1.n) == (int((pred == truth).sum()), len(keep))
    assert r.top5.hits == int((np.argsort(-S, 1)[:, :5] == truth[:, None]).any(1).sum())
    cm = np.zeros((12, 12), int)
    np.add.at(cm, (truth, pred), 1)  # vectors hold exactly the 12 core emotions
    assert r.confusion.tolist() == cm.tolist()
    fig = figures_of(r)["main"]
    assert "12-way" in fig.axes[0].get_title()


def test_pooled_read_scores_equal_the_monitor_summary(llama):
    # one read path: what validation classifies is what `probe` / lm.monitor ranks
    lm, vecs = llama
    texts = [t for t, _ in zip(*story_texts(), strict=True)][:5]
    pooled = read_scores(lm, vecs, texts, 2, batch_size=2)
    for text, got in zip(texts, pooled, strict=True):
        r = lm.monitor(text, vecs, layer=2)
        assert np.allclose(got, r.pooled, atol=1e-5)
        assert [vecs.emotions[i] for i in np.argsort(-got)[:3]] == [e for e, _ in r.summary(3)]
    ids = lm.encode_input(texts[0]).input_ids
    at = read_scores(lm, vecs, [ids], 2, ["calm", "sad"], positions=[[0, len(ids) - 1]])[0]
    full = lm.monitor(ids, vecs, layer=2)
    cols = [vecs.index("calm"), vecs.index("sad")]
    assert np.allclose(at, full.scores[[0, len(ids) - 1]][:, cols], atol=1e-5)
    with pytest.raises(EmolensError, match="outside"):
        read_scores(lm, vecs, [ids], 2, positions=[[len(ids)]])


def test_heldout_needs_heldout_stories(llama):
    lm, vecs = llama
    with pytest.raises(EmolensError, match="held-out"):
        H.heldout_classification(lm, vecs, Corpus([]))


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
def test_final_norm_gain_is_the_scale(arch):
    lm = tiny_lm(arch)
    norm = lm.parts.final_norm
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(lm.hidden_size, generator=g))
        if getattr(norm, "bias", None) is not None:
            norm.bias.copy_(torch.randn(lm.hidden_size, generator=g))
    expected = norm.weight.detach() + (1.0 if arch == "gemma2" else 0.0)  # Gemma: 1 + w
    got = LL.final_norm_gain(lm)
    # RMSNorm's eps shrinks every entry by the same factor sqrt(1 / (1 + eps)), ~1e-6
    assert torch.allclose(got, expected.float(), rtol=1e-4, atol=1e-5)


def test_logit_lens_equals_manual_unembedding(llama):
    lm, vecs = llama
    layer, k = 2, 4
    r = LL.logit_lens(lm, vecs, layer=layer, k=k, emotions=["happy", "sad", "calm"])
    W = lm.model.lm_head.weight.detach()
    g = lm.parts.final_norm.weight.detach()
    for row in r.rows:
        v = torch.from_numpy(np.array(vecs[row.emotion].at(layer)))
        logits = W @ (g * v)
        order = torch.argsort(logits, descending=True).tolist()
        assert list(row.top_ids) == order[:k]
        assert list(row.bottom_ids) == order[::-1][:k]
        assert np.allclose(row.top_logits, logits[list(row.top_ids)].numpy(), atol=1e-4)
        assert row.top_tokens == tuple(lm.tokenizer.decode([i]) for i in row.top_ids)
    assert r.self_match.n == 3 and 0.0 <= r.chance_match <= 1.0
    json.dumps(r.to_json(), allow_nan=False)
    assert len(figures_of(r)["main"].axes) == 1


def test_scenarios_equal_per_prompt_monitor_read(llama):
    lm, vecs = llama
    layer = 2
    r = SC.implicit_scenarios(lm, vecs, layer=layer, batch_size=5)
    cols = [vecs.index(e) for e in CORE_EMOTIONS]
    slow = []
    for s in IMPLICIT_SCENARIOS:
        ro = read(lm, [{"role": "user", "content": s.message}], vecs, layer=layer,
                  add_generation_prompt=True)
        slow.append(ro.scores[ro.assistant_start, cols])
    slow = np.array(slow)
    assert r.scores.shape == (12, 12)
    assert np.allclose(r.scores, slow, atol=1e-5)
    targets = [CORE_EMOTIONS.index(s.target) for s in IMPLICIT_SCENARIOS]
    assert r.raw_accuracy.hits == int((slow.argmax(1) == targets).sum())
    z = (slow - slow.mean(0)) / slow.std(0)
    assert r.accuracy.hits == int((z.argmax(1) == targets).sum())
    assert r.probe_means["happy"] == pytest.approx(slow[:, 0].mean(), abs=1e-6)
    assert "z-scored" in scenario_figure(r).axes[0].get_title()
    assert "raw" in scenario_figure(r, zscored=False).axes[0].get_title()


def test_intensity_rho_equals_scipy(llama):
    lm, vecs = llama
    layer = 1
    r = I.intensity_sweeps(lm, vecs, layer=layer)
    assert r.signs.n == len(INTENSITY_TEMPLATES) * len(INTENSITY_EMOTIONS) == 24
    cols = [vecs.index(e) for e in INTENSITY_EMOTIONS]
    t0 = INTENSITY_TEMPLATES[0]
    for i, m in enumerate(t0.messages()):
        ro = read(lm, [{"role": "user", "content": m}], vecs, layer=layer,
                  add_generation_prompt=True)
        got = [r.templates[0].readouts[e][i] for e in INTENSITY_EMOTIONS]
        assert np.allclose(got, ro.scores[ro.assistant_start, cols], atol=1e-5)
    hits = 0
    for t in r.templates:
        for e in INTENSITY_EMOTIONS:
            rho, p = st.spearmanr(t.values, t.readouts[e])
            assert t.rho[e].r == pytest.approx(rho, abs=1e-9)
            assert t.rho[e].p == pytest.approx(p, rel=1e-6, abs=1e-12)
            ok = bool(np.sign(rho) == t.expected[e] and rho != 0)
            assert t.correct[e] == ok
            hits += ok
    assert r.signs.hits == hits
    assert r.p_value == pytest.approx(st.binom.sf(hits - 1, 24, 0.5))
    assert len(figures_of(r)["main"].axes) >= 6


def _manual_logprobs(lm, ids, layer, delta, lo, hi, words):
    """Next-token log-probs with ``delta`` added to block ``layer``'s output on tokens
    lo..hi-1, by a raw forward hook (no emolens steering code)."""
    def hook(_m, _inp, out):
        h = out[0] if isinstance(out, tuple) else out
        h = h.clone()
        h[:, lo:hi] += delta.to(h.dtype)
        return (h, *out[1:]) if isinstance(out, tuple) else h

    handle = lm.layers[layer].register_forward_hook(hook) if delta is not None else None
    try:
        with torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0, -1]
    finally:
        if handle is not None:
            handle.remove()
    return torch.log_softmax(logits.float(), -1)[words]


def test_steering_delta_equals_manual(llama):
    lm, vecs = llama
    layer, strength = 2, 0.5
    r = SV.steering_validation(lm, vecs, layer=layer, strength=strength, n_random=3)
    assert [p.name for p in r.prompts] == [fp.name for fp in FEEL_PROMPTS]
    words = SV.word_token_ids(lm, CORE_EMOTIONS)
    scale = vecs.residual_scale(layer)
    for fp, res in zip(FEEL_PROMPTS, r.prompts, strict=True):
        msgs = [{"role": "user", "content": fp.user}]
        enc = lm.encode_chat(msgs, add_generation_prompt=True, assistant_prefix=fp.assistant_prefix)
        lo, hi = res.steered_tokens
        # the steered tokens are the whole assistant turn, prefix included
        assert lm.tokenizer.decode(enc.input_ids[lo:hi]) == \
            f"<|im_start|>assistant\n{fp.assistant_prefix}"
        assert hi == len(enc.input_ids)
        plain = _manual_logprobs(lm, enc.input_ids, layer, None, lo, hi, words)
        assert np.allclose(res.plain_logprob, plain.numpy(), atol=1e-4)
        for i in (0, 5, 11):
            v = torch.from_numpy(np.array(vecs.matrix(layer)[i]))
            lp = _manual_logprobs(lm, enc.input_ids, layer, strength * scale * v, lo, hi, words)
            assert np.allclose(res.delta[i], (lp - plain).numpy(), atol=1e-4)
        st_ = SV.feel_matrix_stats(res.delta)
        assert res.diagonal_mean == pytest.approx(st_["diagonal_mean"])
        assert res.random_delta.shape == (3, 12)
        assert res.random_mean_abs == pytest.approx(np.abs(res.random_delta).mean())
    json.dumps(r.to_json(), allow_nan=False)
    assert "Steering 'I feel ...'" in steering_figure(r, "i_feel").axes[0].get_title()
    assert sorted(figures_of(r)) == ["i_feel", "main"]


def test_steering_random_control_is_seeded_and_zero_strength_is_zero(llama):
    lm, vecs = llama
    a = SV.steering_validation(lm, vecs, layer=1, n_random=2, seed=7, prompts=FEEL_PROMPTS[:1])
    b = SV.steering_validation(lm, vecs, layer=1, n_random=2, seed=7, prompts=FEEL_PROMPTS[:1])
    assert np.array_equal(a.prompts[0].random_delta, b.prompts[0].random_delta)
    z = SV.steering_validation(lm, vecs, layer=1, strength=0.0, n_random=2,
                              prompts=FEEL_PROMPTS[:1])
    assert np.abs(z.prompts[0].delta).max() == 0.0
    assert np.abs(z.prompts[0].random_delta).max() == 0.0


def test_missing_emotion_is_a_clear_error(llama):
    lm, vecs = llama
    with pytest.raises(VectorFileError, match="surprised"):
        SC.implicit_scenarios(lm, vecs.subset([e for e in vecs.emotions if e != "surprised"]))


# ---------------------------------------------------------------------------- CLI


def test_cli_validate_json_and_figure(tmp_path, capsys, llama):
    from emolens.cli import main

    model_dir = tmp_path / "tiny"
    model = tiny_model("llama")
    model.save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    from emolens.loading import load_model

    lm = load_model(str(model_dir))
    vecs = make_vectors(lm)
    vpath = vecs.save(tmp_path / "v.safetensors")
    out = tmp_path / "out"
    code = main(["validate", "scenarios", "--model", str(model_dir), "--vectors", str(vpath),
                 "--layer", "1", "--json", "--out", str(out)])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["analysis"] == "scenarios" and data["layer"] == 1
    for block in ("in_project", "fresh"):  # two batteries: in-project and fresh wording
        assert np.array(data[block]["scores"]).shape == (12, 12)
    assert (out / "scenarios.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "scenarios-fresh.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((out / "scenarios.json").read_text())
    assert saved["in_project"]["accuracy"]["n"] == saved["fresh"]["top3"]["n"] == 12
    # a non-default model without --vectors is one clear error line, exit code 2
    assert main(["validate", "intensity", "--model", str(model_dir)]) == 2
    assert "--vectors" in capsys.readouterr().err


# ---------------------------------------------------------------------------- default model


def _default_vectors(lm):
    from emolens.extract import default_vectors, shipped_vectors_path

    if not shipped_vectors_path().is_file():
        pytest.skip("shipped default vectors not built yet")
    return default_vectors(lm)


@pytest.mark.integration
def test_default_scenarios_and_intensity(default_lm):
    vecs = _default_vectors(default_lm)
    sc = SC.implicit_scenarios(default_lm, vecs)
    assert sc.scores.shape == (12, 12) and np.isfinite(sc.scores).all()
    assert np.abs(sc.scores).max() < 1.0
    assert sc.accuracy.n == 12 and 0 <= sc.accuracy.hits <= 12
    assert 1.0 <= sc.mean_rank <= 12.0
    it = I.intensity_sweeps(default_lm, vecs)
    assert it.signs.n == 24 and len(it.templates) == 6
    assert all(math.isfinite(t.rho[e].r) for t in it.templates for e in it.emotions)
    json.dumps(sc.to_json(), allow_nan=False)
    json.dumps(it.to_json(), allow_nan=False)


@pytest.mark.integration
def test_default_logit_lens(default_lm):
    vecs = _default_vectors(default_lm)
    r = LL.logit_lens(default_lm, vecs, k=5)
    assert [row.emotion for row in r.rows] == list(CORE_EMOTIONS)
    assert all(len(row.top_tokens) == 5 and len(row.bottom_tokens) == 5 for row in r.rows)
    assert all(row.top_logits[0] >= row.top_logits[-1] > row.bottom_logits[-1]
               for row in r.rows)
    assert r.self_match.n == 12 and 0.0 < r.chance_match < 0.05
    json.dumps(r.to_json(), allow_nan=False)
