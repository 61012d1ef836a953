"""Monitoring: the one read-out function, streaming equals re-reading, alert rules.

``tiny_vectors`` (real activations of a tiny model) is imported by the other monitor/steer
test files too.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import ARCHITECTURES, tiny_lm

from emolens.errors import LayerError, SteeringError
from emolens.monitor import (
    AlertEngine,
    AlertRule,
    AllOf,
    Readout,
    parse_rule,
    read,
    read_many,
    readout,
    recording,
    smooth,
)
from emolens.vectors import EmotionVectors, NeutralStats, StoryStats, build_vectors

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
    sums, counts = lm.pooled(lm.encode(list(EMOTION_TEXTS.values())), layers, token_skip=0,
                             early_exit=False)
    stats.add_batch(list(EMOTION_TEXTS), (sums / counts[:, None, None]).numpy())
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


def test_readout_summary_ranks_by_mean():
    r = Readout(tokens=["a", "b"], offsets=[(0, 1), (1, 2)], emotions=("x", "y", "z"),
                layers=[0], scores=np.array([[0.1, 0.5, 0.0], [0.3, -0.2, 0.0]]))
    assert r.summary() == [("x", pytest.approx(0.2)), ("y", pytest.approx(0.15)), ("z", 0.0)]
    assert [e for e, _ in r.summary(start=1)] == ["x", "z", "y"]
    assert r.strongest() == ["y", "x"]
    js = r.to_json(top=2)
    assert [s["emotion"] for s in js["summary"]] == [e for e, _ in r.summary(2)]
    assert js["tokens"][1]["top"][0] == {"emotion": "x", "score": 0.3}


# ---- reading text --------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_read_equals_manual_cosine_of_hidden_states(arch):
    lm = tiny_lm(arch)
    vecs = tiny_vectors(lm)
    text = "She was furious when the letter arrived late!"
    r = read(lm, text, vecs, layer=1)
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


# ---- alert rules on constructed signals ----------------------------------------------------
def _feed(engine: AlertEngine, columns: dict[str, list[float]]) -> list[tuple[int, str]]:
    n = len(next(iter(columns.values())))
    fired = []
    for t in range(n):
        scores = np.array([columns.get(e, [0.0] * n)[t] for e in engine.emotions])
        fired += [(a.token_index, a.rule) for a in engine.update(scores, t, f"tok{t}")]
    return fired


def test_alert_fires_exactly_where_the_signal_crosses():
    signal = [0.0, 0.01, 0.02, 0.049, 0.051, 0.08, 0.03, 0.06, 0.06]
    eng = AlertEngine(["calm", "desperate"], [AlertRule("desperate", 0.05)])
    # token 4 crosses; rising edge: 5 stays high (no new alert); 6 falls; 7 crosses again
    assert _feed(eng, {"desperate": signal}) == [(4, "desperate>0.05"), (7, "desperate>0.05")]
    assert eng.fired[0].value == pytest.approx(0.051) and eng.fired[0].token == "tok4"
    assert eng.fired[0].emotion == "desperate"


def test_windowed_rule_fires_when_the_window_mean_crosses():
    # means over 3: t2=0.1/3, t3=0.3/3=0.1, t4=0.5/3 (first > 0.15), t5=0.6/3
    signal = [0.0, 0.0, 0.1, 0.2, 0.2, 0.2, 0.0, 0.0, 0.0]
    eng = AlertEngine(["sad"], [AlertRule("sad", 0.15, window=3)])
    assert _feed(eng, {"sad": signal}) == [(4, "sad>0.15@3")]
    assert eng.fired[0].value == pytest.approx(0.5 / 3)
    # a full window is needed: one huge first token does not fire a window-3 rule early
    eng2 = AlertEngine(["sad"], [AlertRule("sad", 0.15, window=3)])
    assert _feed(eng2, {"sad": [1.0, 0.0, 0.0, 0.0]}) == [(2, "sad>0.15@3")]


def test_below_rules_allof_and_parse():
    calm = [0.2, 0.1, -0.1, -0.2, -0.2, 0.1]
    desp = [0.0, 0.1, 0.0, 0.1, 0.2, 0.2]
    both = AllOf([AlertRule("calm", 0.0, below=True), AlertRule("desperate", 0.05)])
    eng = AlertEngine(["calm", "desperate"], [both, AlertRule("calm", 0.0, below=True)])
    got = _feed(eng, {"calm": calm, "desperate": desp})
    # calm<0 from t2; both hold first at t3 (desperate 0.1), still at t4; calm back up at t5
    assert got == [(2, "calm<0"), (3, "calm<0 & desperate>0.05")]
    rule = parse_rule("desperate>0.05@4 & at ease<-0.1")
    assert isinstance(rule, AllOf) and rule.rules[1] == AlertRule("at ease", -0.1, 1, True,
                                                                  "at ease<-0.1")
    assert AlertRule.parse("calm<0.2@3").below and AlertRule.parse("calm<0.2@3").window == 3
    for bad in ("calm", "calm>x", "calm>0.1@0", "calm>0.1@y", " & "):
        with pytest.raises(SteeringError):
            parse_rule(bad)
    with pytest.raises(SteeringError, match="unknown emotion"):
        AlertEngine(["calm"], ["sadd>0.1"])


def test_shared_rule_object_is_fed_once_per_token():
    shared = AlertRule("sad", 0.15, window=2)
    eng = AlertEngine(["sad"], [shared, AllOf([shared])])
    # if the shared window were fed twice per token, t1 would already average 0.2
    assert [t for t, _ in _feed(eng, {"sad": [0.0, 0.2, 0.2]})] == [2, 2]


def test_alert_callback_and_jsonl_log_is_appended(tmp_path):
    log = tmp_path / "alerts.jsonl"
    log.write_text('{"rule": "earlier run"}\n')
    seen = []
    eng = AlertEngine(["calm", "sad"], ["sad>0.5"], callback=seen.append, log_path=log)
    _feed(eng, {"sad": [0.0, 0.9, 0.0, 0.7]})
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert lines[0] == {"rule": "earlier run"}
    assert [(x["rule"], x["token_index"], x["token"]) for x in lines[1:]] == [
        ("sad>0.5", 1, "tok1"), ("sad>0.5", 3, "tok3")]
    assert [a.token_index for a in seen] == [1, 3]
    eng.reset()  # a new turn: windows and edges forgotten, history kept
    assert [t for t, _ in _feed(eng, {"sad": [0.9]})] == [0] and len(eng.fired) == 3


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
