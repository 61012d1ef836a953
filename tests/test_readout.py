"""The read path: one read-out function, pooled summaries, streaming equals re-reading.

``tiny_vectors`` (real activations of a tiny model) is imported by the other monitor/steer
test files too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ARCHITECTURES, tiny_lm

from emolens.alerts import AlertEngine, AlertRule
from emolens.errors import LayerError, SteeringError
from emolens.extract import NeutralStats, StoryStats, build_vectors, pooled_features
from emolens.readout import (
    Reader,
    Readout,
    pooled_scores,
    read,
    read_many,
    recording,
    smooth,
)
from emolens.readout import score as readout
from emolens.vectors import EmotionVectors

EMOTION_TEXTS = {
    "calm": "I feel calm today, the rain is soft and the tea is warm.",
    "angry": "She was furious when the letter arrived late again!",
    "happy": "How does he feel? He feels happy and proud of his work.",
    "afraid": "Numbers 0123456789 and punctuation: ; , . ? ! ' \" ( )",
}
NEUTRAL = ["The quick brown fox jumps over the lazy dog.",
           "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ"]


def tiny_vectors(lm, norms: bool = True) -> EmotionVectors:
    """Vectors from the tiny model's own pooled activations at every layer (norms from
    neutral text, so steering has a residual scale)."""
    layers = list(range(lm.n_layers))
    stats = StoryStats.empty(list(EMOTION_TEXTS), layers, lm.hidden_size)
    means, _counts, _cost = pooled_features(lm, list(EMOTION_TEXTS.values()), layers,
                                            token_skip=0, early_exit=False)
    stats.add_batch(list(EMOTION_TEXTS), means)
    neutral = None
    if norms:
        neutral = NeutralStats.empty(layers, lm.hidden_size)
        for text in NEUTRAL:
            res = lm.residuals(lm.encode([text]), layers, early_exit=False)
            neutral.add_tokens(np.stack([res[i][0].numpy() for i in layers]))
    vecs = build_vectors(stats, neutral, variance=0.0, model_info=lm.fingerprint(),
                         token_skip=0, corpus_fingerprint="tiny")
    center = stats.means().mean(axis=0)  # [L, d]: what the centered read-out subtracts
    return EmotionVectors(vecs.emotions, vecs.layers, vecs.directions, vecs.raw, vecs.norm_mean,
                          vecs.norm_median, vecs.meta, center)


# ---- pure maths ----------------------------------------------------------------------------
def test_readout_cosine_and_projection_on_known_vectors():
    dirs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]])
    h = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 3.0, 4.0], [1.0, 1.0, 0.0]]])
    cos = readout(h, dirs)
    proj = readout(h, dirs, "projection")
    torch.testing.assert_close(cos[0], torch.tensor([[1.0, 0.0], [0.0, 1.0],
                                                     [2 ** -0.5, 0.6 * 2 ** -0.5]]))
    torch.testing.assert_close(proj[0], torch.tensor([[2.0, 0.0], [0.0, 5.0], [1.0, 0.6]]))
    assert readout(h.to(torch.bfloat16), dirs).dtype == torch.float32  # always fp32 scores
    with pytest.raises(SteeringError, match="read-out mode"):
        readout(h, dirs, "dot")
    centered = readout(h, dirs, "centered", center=torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(centered[0, 0], torch.tensor([1.0, 0.0]))  # (2,0,0) -> (1,0,0)
    torch.testing.assert_close(centered[0, 2], torch.tensor([0.0, 0.6]))  # (1,1,0) -> (0,1,0)
    with pytest.raises(SteeringError, match="center"):
        readout(h, dirs, "centered")


def test_smooth_is_a_causal_moving_average():
    x = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [7.0, 6.0]])
    got = smooth(x, 3)
    assert got[:, 0].tolist() == [1.0, 2.0, 3.0, 5.0]
    assert got[:, 1].tolist() == [0.0, 1.0, 2.0, 4.0]
    assert smooth(x, 1) is x


def test_readout_summary_ranks_the_pooled_scores():
    r = Readout(tokens=["a", "b"], offsets=[(0, 1), (1, 2)], emotions=("x", "y", "z"),
                layers=[0], scores=np.array([[0.1, 0.5, 0.0], [0.3, -0.2, 0.0]]),
                pooled=np.array([0.2, 0.3, -0.1]))
    assert r.summary() == [("y", pytest.approx(0.3)), ("x", pytest.approx(0.2)),
                           ("z", pytest.approx(-0.1))]
    assert [e for e, _ in r.ranked_at(1)] == ["x", "z", "y"]
    assert r.strongest() == ["y", "x"]
    js = r.to_json(top=2)
    assert [s["emotion"] for s in js["summary"]] == ["y", "x"] and js["summary_at"] == "pooled"
    assert [s["emotion"] for s in r.to_json(top=2, at=0)["summary"]] == ["y", "x"]
    assert js["tokens"][1]["top"][0] == {"emotion": "x", "score": 0.3}


def test_summary_equals_the_pooled_classification_of_extraction_features(llama_lm):
    """The probe summary of a text is the score of its extraction-pooled activation:
    the mean from the file's token skip on, centred, cosine (what validation classifies)."""
    from emolens.extract import pooled_features

    vecs = tiny_vectors(llama_lm).with_meta(token_skip=3)
    texts = ["She was furious when the letter arrived late again!", "I feel calm today."]
    reads = read_many(llama_lm, texts, vecs, layer=2, batch_size=2)
    feats, _, _ = pooled_features(llama_lm, texts, [2], token_skip=3)
    want = Reader(vecs, [2]).scores(2, torch.from_numpy(feats[:, 0].astype(np.float32)))
    np.testing.assert_allclose(np.stack([r.pooled for r in reads]), want.numpy(), atol=1e-5)
    np.testing.assert_allclose(pooled_scores(llama_lm, texts, vecs, layer=2), want.numpy(),
                               atol=1e-5)
    assert [e for e, _ in reads[0].summary()] == [
        vecs.emotions[i] for i in np.argsort(-want[0].numpy(), kind="stable")]
    # the first token is the sink; then a quarter of a short text's content is skipped
    assert [r.pool_start for r in reads] == [1 + min(3, (len(r.tokens) - 1) // 4) for r in reads]
    assert reads[0].mode == "centered"  # auto: the file stores its training centre


# ---- reading text --------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_read_equals_manual_cosine_of_hidden_states(arch):
    lm = tiny_lm(arch)
    vecs = tiny_vectors(lm)
    text = "She was furious when the letter arrived late!"
    r = read(lm, text, vecs, layer=1, mode="cosine")
    ids = lm.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        h = lm.model(**ids, output_hidden_states=True).hidden_states[2][0]  # block 1 output
    want = torch.nn.functional.cosine_similarity(
        h[:, None, :], torch.from_numpy(np.array(vecs.matrix(1)))[None], dim=-1)
    np.testing.assert_allclose(r.scores, want.numpy(), atol=1e-5)
    assert r.token_ids == ids["input_ids"][0].tolist() and len(r.tokens) == len(r.offsets)
    # several layers: the mean of each layer's read-out; projection mode too
    two = read(lm, text, vecs, layer=[1, 2], mode="projection")
    one = [read(lm, text, vecs, layer=i, mode="projection").scores for i in (1, 2)]
    np.testing.assert_allclose(two.scores, (one[0] + one[1]) / 2, atol=1e-5)
    centered = read(lm, text, vecs, layer=1, mode="centered")
    want = torch.nn.functional.cosine_similarity(
        (h - torch.from_numpy(np.array(vecs.center[1])))[:, None, :],
        torch.from_numpy(np.array(vecs.matrix(1)))[None], dim=-1)
    np.testing.assert_allclose(centered.scores, want.numpy(), atol=1e-5)


def test_read_chat_ids_and_assistant_start(llama_lm):
    vecs = tiny_vectors(llama_lm)
    chat = [{"role": "user", "content": "How are you?"},
            {"role": "assistant", "content": "I feel calm."}]
    r = read(llama_lm, chat, vecs)
    assert r.text == llama_lm.format_chat(chat, add_generation_prompt=False)
    # assistant_start = last token of "<|im_start|>assistant\n" before the reply
    prefix = llama_lm.format_chat(chat[:1], add_generation_prompt=True)
    assert r.offsets[r.assistant_start][1] <= len(prefix)
    assert r.text[r.offsets[r.assistant_start + 1][0]:].startswith("I feel calm")
    gen = read(llama_lm, chat[:1], vecs, add_generation_prompt=True)
    enc = llama_lm.encode_chat(chat[:1])
    assert gen.assistant_start == r.assistant_start == enc.assistant_start
    by_ids = read(llama_lm, r.token_ids, vecs)
    np.testing.assert_allclose(by_ids.scores, r.scores, atol=1e-6)
    assert by_ids.text == "".join(by_ids.tokens)


def test_read_many_equals_read_one_by_one(llama_lm):
    vecs = tiny_vectors(llama_lm)
    texts = ["I feel calm.", "She was furious when the letter arrived late again!",
             [{"role": "user", "content": "Hi"}]]
    many = read_many(llama_lm, texts, vecs, batch_size=2, window=2)
    for text, got in zip(texts, many, strict=True):
        one = read(llama_lm, text, vecs, window=2)
        assert got.token_ids == one.token_ids
        np.testing.assert_allclose(got.scores, one.scores, atol=1e-5)


def test_read_rejects_unknown_layer(llama_lm):
    vecs = tiny_vectors(llama_lm).subset(["calm", "happy"])
    only3 = EmotionVectors(vecs.emotions, (3,), vecs.directions[:, 3:], vecs.raw[:, 3:],
                           vecs.norm_mean[3:], vecs.norm_median[3:], vecs.meta)
    with pytest.raises(LayerError, match="not in this vector file"):
        read(llama_lm, "hi there", only3, layer=1)


def test_recording_positions_and_stacking(llama_lm):
    vecs = tiny_vectors(llama_lm)
    text = "The quick brown fox jumps over the lazy dog."
    ids = llama_lm.tokenizer(text)["input_ids"]
    with torch.inference_mode(), recording(llama_lm, vecs, layer="1,3") as rec:
        out = llama_lm.model(input_ids=torch.tensor([ids[:5]]), use_cache=True)
        llama_lm.model(input_ids=torch.tensor([ids[5:]]), past_key_values=out.past_key_values,
                       use_cache=True)
    assert rec.length() == len(ids)
    full = read(llama_lm, text, vecs, layer="1,3").scores
    np.testing.assert_allclose(rec.stacked()[0], full, atol=1e-5)
    for pos in (0, 4, 5, len(ids) - 1):
        np.testing.assert_allclose(rec.position(0, pos), full[pos], atol=1e-5)
    with pytest.raises(IndexError):
        rec.position(0, len(ids))
    assert all(not m._forward_hooks for m in llama_lm.layers)


# ---- streaming equals re-reading -----------------------------------------------------------
PROMPTS = ["I feel", [{"role": "user", "content": "How was the letter?"}],
           "She was furious when the letter arrived"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_generate_text_monitor_scores_equal_full_reread(arch):
    lm = tiny_lm(arch)
    vecs = tiny_vectors(lm)
    outs = lm.generate_text(PROMPTS, max_new_tokens=12, monitor=vecs, layer="1,2")
    assert len({o.prompt_tokens for o in outs}) > 1  # left padding really happens
    for o in outs:
        assert o.n_tokens > 0 and o.scores.shape == (o.n_tokens, len(vecs))
        full = read(lm, o.prompt_ids + o.token_ids, vecs, layer="1,2").scores
        np.testing.assert_allclose(o.scores, full[o.prompt_tokens:], atol=1e-4, rtol=0)
        np.testing.assert_allclose(o.prompt_scores, full[:o.prompt_tokens], atol=1e-4, rtol=0)
    assert all(not m._forward_hooks for m in lm.layers)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_stream_monitor_scores_equal_full_reread(arch):
    lm = tiny_lm(arch)
    vecs = tiny_vectors(lm)
    prompt = PROMPTS[1]
    plain = lm.generate_text([prompt], max_new_tokens=10)[0]
    for mode in ("cosine", "centered"):
        steps = list(lm.stream(prompt, max_new_tokens=10, monitor=vecs, mode=mode))
        assert [s.token_id for s in steps] == plain.token_ids  # monitoring changes nothing
        assert [s.index for s in steps] == list(range(len(steps)))
        full = read(lm, plain.prompt_ids + plain.token_ids, vecs, mode=mode).scores
        np.testing.assert_allclose(np.stack([s.scores for s in steps]),
                                   full[plain.prompt_tokens:], atol=1e-4, rtol=0)
    assert all(not m._forward_hooks for m in lm.layers)


def test_stream_feeds_alert_engine_with_the_streamed_scores(llama_lm):
    vecs = tiny_vectors(llama_lm)
    prompt = "She was furious when the letter arrived"
    steps = list(llama_lm.stream(prompt, max_new_tokens=8, monitor=vecs))
    sad = np.array([s.scores[vecs.index("angry")] for s in steps])
    k = 1 + int(np.argmax(sad[1:] > sad[0]))  # first token rising above the first
    assert sad[k] > sad[0]
    thr = float(sad[:k].max() + sad[k]) / 2
    eng = AlertEngine(vecs.emotions, [AlertRule("angry", thr)])
    again = list(llama_lm.stream(prompt, max_new_tokens=8, monitor=vecs, rules=eng))
    assert [a.token_index for a in eng.fired][0] == k
    assert again[k].alerts and again[k].alerts[0].rule == eng.fired[0].rule
    assert all(not s.alerts for s in again[:k])


# ---- vectors for the default model (integration tests) -------------------------------------
DEFAULT_TEST_EMOTIONS = ("happy", "sad", "calm", "desperate", "afraid", "angry", "joyful",
                         "content", "nervous", "excited", "bored", "proud", "lonely",
                         "grief-stricken", "hopeful", "ashamed")


def default_model_vectors(lm) -> EmotionVectors:
    """The shipped default vectors if present; else small real ones (16 emotions, layers
    15 and 20) built from the curated corpus once and cached under ``$EMOLENS_CACHE``."""
    from emolens.errors import VectorFileError

    try:
        from emolens.extract import default_vectors

        return default_vectors(lm)
    except (ImportError, VectorFileError):
        pass
    from emolens.corpus import Corpus, load_corpus
    from emolens.extract import extract
    from emolens.loading import cache_dir

    corpus = load_corpus("default")
    sub = Corpus([r for r in corpus.stories() if r.emotion in DEFAULT_TEST_EMOTIONS]
                 + corpus.neutral()[:40], source="default-subset")
    key = f"{lm.fingerprint()['config_hash']}-{sub.fingerprint()[:16]}"
    path = cache_dir() / "test-vectors" / f"{key}.safetensors"
    if path.is_file():
        return EmotionVectors.load(path, expect_model=lm.fingerprint())
    vecs = extract(lm, sub, layers="15,20", sweep=False)
    vecs.save(path)  # atomic
    return vecs
