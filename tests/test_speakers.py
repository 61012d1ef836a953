"""Speaker analysis: positions point at the right tokens, read-outs equal the monitor's,
reply means equal a full re-read, correlations equal numpy's; the dialogue check's maths on
constructed data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_validation import _llama

from emolens.concepts import CORE_EMOTIONS, SPEAKER_PROMPTS
from emolens.corpus import Corpus, Record
from emolens.errors import EmolensError
from emolens.experiments.speakers import (
    dialogue_order,
    dialogue_positions,
    prompt_bootstrap_ci,
    speaker_analysis,
    speaker_positions,
)
from emolens.readout import read
from emolens.report.figures import figures_of

DIALOGUES = [
    Record(id="d0", kind="dialogue", text="-", user_emotion="happy", assistant_emotion="calm",
           turns=[{"role": "user", "content": "I got the job, I start on Monday!"},
                  {"role": "assistant", "content": "Good news. Take the weekend slowly."},
                  {"role": "user", "content": "I can't stop smiling."},
                  {"role": "assistant", "content": "Enjoy it; Monday will come soon."}]),
    Record(id="d1", kind="dialogue", text="-", user_emotion="afraid", assistant_emotion="sad",
           turns=[{"role": "user", "content": "There is a noise in the attic."},
                  {"role": "assistant", "content": "It reminds me of the old house."}]),
    Record(id="d2", kind="dialogue", text="-", user_emotion="calm", assistant_emotion="calm",
           turns=[{"role": "user", "content": "Same feelings are skipped."},
                  {"role": "assistant", "content": "Indeed."}]),
]


@pytest.fixture
def llama():
    return _llama()


def test_dialogue_order_known_answer():
    # 3 dialogues, 3 probes; user label / assistant label columns per dialogue
    at_user = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.1], [0.0, 0.5, 0.4]])
    at_asst = np.array([[0.1, 0.8, 0.0], [0.6, 0.1, 0.2], [0.1, 0.2, 0.3]])
    c = dialogue_order(at_user, at_asst, [0, 0, 2], [1, 2, 1], probes=["a", "b", "c"])
    # at the user end: 0.9 > 0.1 yes; 0.2 > 0.1 yes; 0.4 > 0.5 no
    assert (c.user_first_at_user.hits, c.user_first_at_user.n) == (2, 3)
    # at the assistant end: 0.8 > 0.1 yes; 0.2 > 0.6 no; 0.2 > 0.3 no
    assert c.assistant_first_at_assistant.hits == 1
    assert c.user_rank_at_user == pytest.approx((1 + 2 + 2) / 3)
    assert c.assistant_rank_at_assistant == pytest.approx((1 + 2 + 2) / 3)
    with pytest.raises(EmolensError):
        dialogue_order(at_user, at_asst[:2], [0, 0, 2], [1, 2, 1])


def test_prompt_bootstrap_ci_identical_and_nan():
    a = np.arange(24.0).reshape(6, 4) ** 1.5
    lo, hi = prompt_bootstrap_ci(a, 2 * a + 1, n_boot=100)
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    assert all(np.isnan(prompt_bootstrap_ci(a[:1], a[:1])))


def test_positions_point_at_the_right_tokens(llama):
    lm, _ = llama
    msg = SPEAKER_PROMPTS[0].message
    ids, u, s = speaker_positions(lm, msg)
    enc = lm.encode_chat([{"role": "user", "content": msg}], add_generation_prompt=True)
    assert ids == enc.input_ids and s == enc.assistant_start
    # the user token is the last one inside the message; the next one is the turn end
    assert enc.offsets[u][1] == enc.text.index(msg) + len(msg)
    assert lm.tokenizer.decode(ids[u + 1]) == "<|im_end|>"
    assert lm.tokenizer.decode(ids[:s + 1]).rstrip().endswith("assistant")
    ids, u, a = dialogue_positions(lm, DIALOGUES[0])
    text = lm.tokenizer.decode(ids)
    assert lm.tokenizer.decode(ids[:u + 1]).endswith("I can't stop smiling.")
    assert lm.tokenizer.decode(ids[:a + 1]).endswith("Monday will come soon.")
    assert a > u and text.count("<|im_start|>user") == 2


def test_speaker_analysis_against_slow_paths(llama):
    lm, vecs = llama
    layer = 2
    prompts = SPEAKER_PROMPTS[:4]
    r = speaker_analysis(lm, vecs, layer=layer, max_new_tokens=5, corpus=Corpus(DIALOGUES),
                         prompts=prompts, batch_size=3)
    P, E = len(prompts), len(vecs.emotions)
    assert r.user_scores.shape == r.start_scores.shape == r.reply_scores.shape == (P, E)
    assert all(t == "?" for t in r.user_token)  # every prompt ends with "What's your take?"
    for i, p in enumerate(prompts):
        ro = read(lm, [{"role": "user", "content": p.message}], vecs, layer=layer,
                  add_generation_prompt=True)
        _, u, s = speaker_positions(lm, p.message)
        assert np.allclose(r.user_scores[i], ro.scores[u], atol=1e-5)
        assert np.allclose(r.start_scores[i], ro.scores[s], atol=1e-5)
    # reply means equal a full, uncached re-read of prompt + reply at the reply positions
    gens = lm.generate_text([[{"role": "user", "content": p.message}] for p in prompts],
                            max_new_tokens=5)
    for i, g in enumerate(gens):
        assert r.reply_lengths[i] == g.n_tokens
        if g.n_tokens == 0:
            assert np.isnan(r.reply_scores[i]).all()
            continue
        full = read(lm, g.prompt_ids + g.token_ids, vecs, layer=layer)
        want = full.scores[len(g.prompt_ids):].mean(0)
        assert np.allclose(r.reply_scores[i], want, atol=1e-4)
    ok = np.isfinite(r.reply_scores).all(1)
    assert r.user_vs_start.r == pytest.approx(
        np.corrcoef(r.user_scores.ravel(), r.start_scores.ravel())[0, 1])
    assert r.user_vs_start.n == P * E
    assert r.reply_vs_start.r == pytest.approx(
        np.corrcoef(r.reply_scores[ok].ravel(), r.start_scores[ok].ravel())[0, 1])
    assert r.reply_vs_user.n == int(ok.sum()) * E
    rise = (r.start_scores - r.user_scores).mean(0)
    assert r.rising[0] == (vecs.emotions[int(rise.argmax())], pytest.approx(rise.max()))
    # dialogue check: d2 (same emotion for both) is skipped; the rest by hand
    d = r.dialogues
    assert d is not None and d.n == 2 and d.probes == tuple(CORE_EMOTIONS)
    hits_u = hits_a = 0
    for rec in DIALOGUES[:2]:
        ids, u, a = dialogue_positions(lm, rec)
        ro = read(lm, rec.turns, vecs, layer=layer)
        ue, ae = vecs.index(rec.user_emotion), vecs.index(rec.assistant_emotion)
        hits_u += ro.scores[u, ue] > ro.scores[u, ae]
        hits_a += ro.scores[a, ae] > ro.scores[a, ue]
    assert (d.user_first_at_user.hits, d.assistant_first_at_assistant.hits) == (hits_u, hits_a)
    data = r.to_json()
    json.dumps(data, allow_nan=False)
    assert data["analysis"] == "speakers" and data["study"]["reply_vs_start"] == 0.87
    assert len(figures_of(r)["main"].axes) == 3
    assert "reply mean vs assistant_start" in r.summary()


def test_speaker_analysis_core_probes_without_dialogues(llama):
    lm, vecs = llama
    r = speaker_analysis(lm, vecs, layer=1, max_new_tokens=3, emotions=["happy", "sad"],
                         dialogue_check=False, prompts=SPEAKER_PROMPTS[:3])
    assert r.user_scores.shape == (3, 2) and r.dialogues is None
    assert r.emotions == ("happy", "sad")
