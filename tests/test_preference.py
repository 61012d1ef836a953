"""The preference experiment (study section 8) end to end on constructed data and tiny models.

The centrepiece is a hand-built GPT-2 whose preference is known: each activity is one token
whose embedding carries ``s * u`` for a planted strength ``s``; the last block has two
attention heads that read the u-content of option A's token and of option B's token
(found by their position), and the unembedding turns A minus B into the "A" minus "B"
logit. So Elo must follow ``s``, the probe ``u`` must correlate with Elo, steering with
``u`` on an activity's tokens must raise its Elo (and ``-u`` lower it), and swapping the
options must flip the raw logit difference.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from emolens.concepts.activities import Activity, load_activities
from emolens.errors import EmolensError
from emolens.experiments import Context, get
from emolens.experiments.choices import (
    ChoiceRow,
    answer_token_ids,
    choice_logits,
    encode_choice,
    feel_scores,
    middle_layers,
)
from emolens.experiments.preference import pick_vectors, preference
from emolens.experiments.preference_math import balanced_pairs, choice_probability, fit_elo
from emolens.lens import LanguageModel
from emolens.stats import spearman
from emolens.testing import tiny_lm, tiny_tokenizer, tiny_vectors
from emolens.vectors import EmotionVectors

N_ACTS = 8
PLANTED = np.linspace(-1.0, 1.0, N_ACTS)


def _zero_mean_orthonormal(d: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(d, k + 1))
    m[:, 0] = 1.0  # orthogonal to the all-ones vector: LayerNorm's centring leaves them alone
    q, _ = np.linalg.qr(m)
    return q[:, 1:].T


def planted_lm(strengths=PLANTED, d: int = 32, seed: int = 0):
    """The hand-built GPT-2 of the module docstring; returns (lm, u, activity words)."""
    tok = copy.deepcopy(tiny_tokenizer())
    words = [f"zq{i}" for i in range(len(strengths))]
    tok.add_tokens(words)
    cfg = GPT2Config(vocab_size=len(tok), n_layer=4, n_embd=d, n_head=4, n_positions=256,
                     tie_word_embeddings=False, eos_token_id=2, bos_token_id=1, pad_token_id=0)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg).eval()
    u, k1, k2, w = (torch.tensor(v, dtype=torch.float32)
                    for v in _zero_mean_orthonormal(d, 4, seed))
    lm = LanguageModel(model, tok, name="planted-gpt2")
    (ta, _), (tb, _) = encode_choice(lm, words[0], words[1])[1:]
    hd = d // 4
    with torch.no_grad():
        tr = model.transformer
        emb = torch.randn(len(tok), d) * (2 / d ** 0.5)
        for v in (u, k1, k2, w):
            emb -= (emb @ v)[:, None] * v[None]
        for word, s in zip(words, strengths, strict=True):
            emb[tok.convert_tokens_to_ids(word)] += float(s) * u
        tr.wte.weight.copy_(emb)
        tr.wpe.weight.zero_()
        tr.wpe.weight[ta] = 10 * k1  # option A's token is keyed by k1, option B's by k2
        tr.wpe.weight[tb] = 10 * k2
        for block in tr.h:  # blocks 0-2 pass the residual through unchanged
            for lin in (block.attn.c_proj, block.mlp.c_proj):
                lin.weight.zero_()
                lin.bias.zero_()
        att = tr.h[3].attn
        att.c_attn.weight.zero_()
        att.c_attn.bias.zero_()
        att.c_attn.bias[0] = att.c_attn.bias[hd] = 10.0  # constant queries of heads 0 and 1
        att.c_attn.weight[:, d] = k1  # head 0 attends to option A's token
        att.c_attn.weight[:, d + hd] = k2  # head 1 to option B's
        att.c_attn.weight[:, 2 * d] = u  # both read its u-content
        att.c_attn.weight[:, 2 * d + hd] = u
        att.c_proj.weight[0] = 3 * w  # A minus B into w
        att.c_proj.weight[hd] = -3 * w
        model.lm_head.weight.zero_()
        a_id, b_id = answer_token_ids(lm)
        model.lm_head.weight[a_id] = 0.2 * w
        model.lm_head.weight[b_id] = -0.2 * w
    return lm, u.numpy(), words


def planted_vectors(lm, u):
    """Probes: the planted direction, its opposite, and three random directions."""
    names = ("planted", "antiplanted", "other1", "other2", "other3")
    rng = np.random.default_rng(1)
    n_layers, d = lm.n_layers, lm.hidden_size
    dirs = np.zeros((len(names), n_layers, d), np.float32)
    dirs[0], dirs[1] = u, -u
    for k in range(2, len(names)):
        v = rng.normal(size=d)
        dirs[k] = v / np.linalg.norm(v)
    batch = lm.pad([lm.encode_input("The kettle boils and the clock ticks.").input_ids])
    store = lm.residuals(batch, list(range(n_layers)), early_exit=False)
    norms = np.array([float(store[i][0].norm(dim=-1).median()) for i in range(n_layers)],
                     np.float32)
    meta = {"model": lm.fingerprint(), "token_skip": 0, "recommended_layer": 2}
    return EmotionVectors(names, tuple(range(n_layers)), dirs, dirs.copy(), norms, norms, meta,
                          np.zeros((n_layers, d), np.float32))


def planted_activities(words):
    cats = ("Helpful", "Social")
    return tuple(Activity(f"{cats[i % 2].lower()}.a{i}", cats[i % 2], w)
                 for i, w in enumerate(words))


@pytest.fixture(scope="module")
def planted():
    lm, u, words = planted_lm()
    vecs = planted_vectors(lm, u)
    acts = planted_activities(words)
    result = preference(lm, vecs, activities=acts, pairs=0, n_vectors=5, n_random=2,
                        dose=(0.25, 1.0), n_boot=100, n_perm=500, time_sequential=2)
    return lm, vecs, acts, result


# ---- simulated choices -------------------------------------------------------------------
def test_elo_recovers_a_planted_ranking_from_simulated_noisy_choices():
    rng = np.random.default_rng(0)
    n = 64
    truth = rng.normal(scale=1.0, size=n)
    pairs = balanced_pairs(n, 320, seed=1)
    p_true = choice_probability(truth[pairs[:, 0]], truth[pairs[:, 1]])
    noisy = np.clip(p_true + rng.normal(scale=0.1, size=p_true.size), 0.0, 1.0)
    fit = fit_elo(pairs, noisy, n, n_boot=200)
    assert spearman(fit.elo, truth).r > 0.9
    assert fit.n_components == 1 and abs(float(fit.elo.mean()) - 1500) < 1e-6
    inside = (fit.ci_low <= 1500 + 173.7 * (truth - truth.mean())) & \
             (1500 + 173.7 * (truth - truth.mean()) <= fit.ci_high)
    assert inside.mean() > 0.8
    hard = fit_elo(pairs, noisy, n, hard=True, n_boot=0)
    assert spearman(hard.elo, truth).r > 0.8


# ---- the planted model ---------------------------------------------------------------------
def test_swapping_the_options_flips_the_raw_logit_difference(planted):
    lm, _vecs, _acts, r = planted
    d = {(int(a), int(b)): float(x) for (a, b), x in zip(r.pairs, r.logit_diff, strict=True)}
    assert len(d) == N_ACTS * (N_ACTS - 1)
    for (a, b), x in d.items():
        assert np.sign(x) == np.sign(PLANTED[a] - PLANTED[b])
        assert np.sign(d[(b, a)]) == -np.sign(x)  # the other order: the sign flips
    assert abs(r.position.mean_p_a - 0.5) < 0.01


def test_elo_and_probes_recover_the_planted_preference(planted):
    _lm, _vecs, acts, r = planted
    assert r.ranked() == list(range(N_ACTS))[::-1]  # Elo in the planted order
    assert all(lo <= e <= hi for e, lo, hi in zip(r.elo, r.elo_ci_low, r.elo_ci_high,
                                                  strict=True))
    assert r.probe("planted").r > 0.95 and r.probe("planted").p_perm < 0.01
    assert r.probe("antiplanted").r < -0.95
    assert {g.group for g in r.categories} == {"Helpful", "Social"}
    assert r.layers == (1, 2) == tuple(middle_layers(4))


def test_steering_on_an_activitys_tokens_moves_its_elo_as_the_probe_predicts(planted):
    _lm, _vecs, _acts, r = planted
    eff = {v.name: v for v in r.effects}
    up, down = eff["planted"].effect, eff["antiplanted"].effect
    assert up.steered_ci_low > 50 and up.effect > 0
    assert down.steered_ci_high < -50 and down.effect < 0
    for k in range(2):  # random directions barely move anything
        assert abs(eff[f"random-{k}"].effect.steered_mean) < 0.5 * up.steered_mean
        assert eff[f"random-{k}"].kind == "random"
    assert r.effect_vs_r is not None and r.effect_vs_r.r > 0.5 and r.effect_vs_r.n == 5
    assert len(r.steered) == len(r.control) == N_ACTS // 2
    doses = {c.name: c for c in r.doses}
    assert set(doses) == {"planted", "antiplanted"}
    ups = [e.steered_mean for e in doses["planted"].effects]
    assert doses["planted"].strengths == (0.0, 0.25, 0.5, 1.0)
    assert ups[0] == 0 and all(a < b for a, b in zip(ups, ups[1:], strict=False))
    downs = [e.steered_mean for e in doses["antiplanted"].effects]
    assert all(a > b for a, b in zip(downs, downs[1:], strict=False))


def test_timing_summary_and_json(planted):
    _lm, _vecs, _acts, r = planted
    t = r.timing
    assert t["conditions_timed"] == 2 and t["max_abs_logit_gap"] < 1e-4 and t["speedup"] > 0
    assert t["rows_run"] > len(r.pairs)
    text = r.summary()
    for needle in ("top 5", "Elo by category", "planted", "random-0", "ΔElo vs probe-Elo r",
                   "dose planted", "verdict", "speed-up"):
        assert needle in text
    data = r.to_json()
    json.dumps(data, allow_nan=False)
    assert data["kind"] == "preference" and len(data["elo"]) == N_ACTS
    from emolens.report.figures import figures_of

    assert set(figures_of(r)) == {"main", "activities", "probes", "steering", "dose"}


def test_feel_scores_read_the_activity_tokens(planted):
    lm, vecs, acts, _r = planted
    s = feel_scores(lm, vecs, [a.text for a in acts], [1])
    k = vecs.index("planted")
    assert np.all(np.diff(s[:, k]) > 0)  # the planted probe follows s, token by token
    assert np.allclose(s[:, vecs.index("antiplanted")], -s[:, k])


# ---- the batched engine on tiny random models ---------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_prefix_cache_and_batched_conditions_equal_rows_alone(arch):
    lm = tiny_lm(arch)
    vecs = tiny_vectors(lm)
    answers = answer_token_ids(lm)
    texts = [a.text for a in load_activities()[:4]]
    rows = []
    for i in range(4):
        for j in range(4):
            if i != j:
                ids, a_tok, b_tok = encode_choice(lm, texts[i], texts[j])
                steer = {"happy": 1.0} if (i + j) % 2 else {vecs.random_direction(3): 1.5}
                ranges = (a_tok,) if i < 2 else (a_tok, b_tok) if i == 2 else (b_tok,)
                rows.append(ChoiceRow(tuple(ids), steer if j != 0 else None, ranges))
    cached = choice_logits(lm, rows, answers, vectors=vecs, layers=[1, 2], batch_size=5)
    plain = choice_logits(lm, rows, answers, vectors=vecs, layers=[1, 2], batch_size=5,
                          prefix_cache=False)
    alone = np.stack([choice_logits(lm, [r], answers, vectors=vecs, layers=[1, 2],
                                    prefix_cache=False)[0] for r in rows])
    np.testing.assert_allclose(cached, plain, atol=1e-5)
    np.testing.assert_allclose(cached, alone, atol=1e-5)
    unsteered = choice_logits(lm, [ChoiceRow(r.ids) for r in rows], answers)
    changed = np.abs(cached - unsteered).max(axis=1) > 1e-4
    assert changed.tolist() == [r.steered for r in rows]


def test_choice_encoding_finds_both_options():
    lm = tiny_lm("llama")
    ids, (a0, a1), (b0, b1) = encode_choice(lm, "nap", "nap in the sun")
    assert lm.tokenizer.decode(ids[a0:a1]).strip() == "nap"
    assert lm.tokenizer.decode(ids[b0:b1]).strip() == "nap in the sun"
    assert a1 <= b0
    with pytest.raises(EmolensError, match="layers"):
        choice_logits(lm, [ChoiceRow(tuple(ids), {"happy": 1.0}, ((a0, a1),))],
                      answer_token_ids(lm))


def test_pick_vectors_spans_the_ranking():
    names = [f"e{i}" for i in range(20)] + ["blissful", "hostile"]
    r = list(np.linspace(0.8, -0.8, 20)) + [0.3, -0.2]
    picked = pick_vectors(names, r, 12)
    assert len(picked) == 12 and "e0" in picked and "e19" in picked
    assert {"blissful", "hostile"} <= set(picked)
    assert pick_vectors(names, [math.nan] * len(names), 12) == []


def test_registry_entry_runs_with_its_options():
    lm = tiny_lm("llama")
    vecs = tiny_vectors(lm)
    a = get("preferences")
    assert a.name == "preference" and a.section == "8"
    assert a.option("steer_vectors").parse("calm, sad") == ("calm", "sad")
    r = a(Context(lm, vecs), pairs=10, steer_vectors="calm,sad,happy", dose=(),
          n_boot=10, n_perm=20, activities="")
    assert {v.name for v in r.effects if v.kind == "vector"} == {"calm", "sad", "happy"}
    assert len(r.pairs) == 20 and len(r.elo) == 64
    with pytest.raises(EmolensError, match="lacks"):
        a(Context(lm, vecs), pairs=10, steer_vectors="blissful", n_boot=10, n_perm=20)


def test_validate_preference_on_the_command_line(tmp_path, capsys):
    from emolens.cli import main

    lm = tiny_lm("llama")
    lm.model.save_pretrained(tmp_path / "m")
    lm.tokenizer.save_pretrained(tmp_path / "m")
    tiny_vectors(lm).save(tmp_path / "v.safetensors")
    code = main(["validate", "preference", "--model", str(tmp_path / "m"), "--vectors",
                 str(tmp_path / "v.safetensors"), "--device", "cpu", "--pairs", "10",
                 "--steer-vectors", "calm,sad,happy", "--strength", "0.3", "--dose", "",
                 "--n-boot", "10", "--n-perm", "20", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["strength"] == 0.3 and len(data["pairs"]) == 20
    assert [e["name"] for e in data["effects"]][-1] == "random-0"
