"""Steering: exact deltas, KV cache = no cache, strength 0, per-row batches, guardrails."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from conftest import tiny_lm
from test_readout import tiny_vectors

from emolens.alerts import Guard
from emolens.errors import EmolensError, LayerError, SteeringError
from emolens.steer import (
    build_steering,
    char_span_tokens,
    parse_strengths,
    steering,
)
from emolens.vectors import Direction

STRONG = {"happy": 1.5, "angry": -1.0}  # tiny random models need a strong push to change tokens
PROMPT = "She was furious when the letter"


@contextlib.contextmanager
def step_logits(lm):
    """Collect the last-position logits of every forward of ``lm.model``."""
    seen: list[torch.Tensor] = []
    handle = lm.model.register_forward_hook(
        lambda _m, _a, out: seen.append(out.logits[:, -1].detach().clone()))
    try:
        yield seen
    finally:
        handle.remove()


def no_cache_logits(lm, ids, mask=None):
    with torch.inference_mode():
        mask = torch.ones_like(ids) if mask is None else mask
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return lm.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                        use_cache=False).logits[:, -1]


# ---- the delta itself ----------------------------------------------------------------------
def test_delta_is_strength_times_residual_scale_times_unit_direction(llama_lm):
    vecs = tiny_vectors(llama_lm)
    layer = 2
    batch = llama_lm.encode(["I feel calm today."])
    before = llama_lm.residuals(batch, [layer])[layer]
    with steering(llama_lm, vecs, {"happy": 0.3, "calm": -0.2}, layers=layer):
        after = llama_lm.residuals(batch, [layer])[layer]
    scale = vecs.residual_scale(layer)
    want = scale * (0.3 * vecs.matrix(layer)[vecs.index("happy")]
                    - 0.2 * vecs.matrix(layer)[vecs.index("calm")])
    np.testing.assert_allclose((after - before)[0].numpy(), np.tile(want, (after.shape[1], 1)),
                               atol=1e-5)
    assert scale == pytest.approx(float(vecs.norm_median[vecs.layer_index(layer)]))
    with steering(llama_lm, vecs, {"happy": 0.3}, layers=layer, robust=False):
        mean_scaled = llama_lm.residuals(batch, [layer])[layer]
    np.testing.assert_allclose(
        (mean_scaled - before)[0, 0].numpy(),
        0.3 * vecs.residual_scale(layer, robust=False) * vecs.matrix(layer)[vecs.index("happy")],
        atol=1e-5)
    assert all(not m._forward_hooks for m in llama_lm.layers)


def test_a_direction_from_the_file_knows_its_scale(llama_lm):
    vecs = tiny_vectors(llama_lm)
    calm = build_steering(llama_lm, vecs["calm"], 0.1, layers=1)
    by_name = build_steering(llama_lm, vecs, {"calm": 0.1}, layers=1)
    torch.testing.assert_close(calm.deltas[1], by_name.deltas[1])
    with llama_lm.steer(vecs["calm"], strength=0.1, layers=1) as plan:
        torch.testing.assert_close(plan.deltas[1], by_name.deltas[1])
    with pytest.raises(SteeringError, match="once"):
        llama_lm.steer(vecs["calm"], 0.1, strength=0.1)


def test_a_hand_made_direction_needs_a_scale(llama_lm):
    vecs = tiny_vectors(llama_lm)
    d = vecs["happy"] - vecs["angry"]
    bare = Direction("mine", {1: np.asarray(d.at(1))})
    with pytest.raises(SteeringError, match="scale"):
        build_steering(llama_lm, bare, 0.5)
    plan = build_steering(llama_lm, d, 0.5, scale=4.0, layers=1)
    unit = d.at(1) / np.linalg.norm(d.at(1))
    np.testing.assert_allclose(plan.deltas[1][0, 0].numpy(), 2.0 * unit, atol=1e-6)
    rows = build_steering(llama_lm, vecs, [{d: 0.1}, {"happy": 0.2}], layers=1)
    np.testing.assert_allclose(rows.deltas[1][0, 0].numpy(),
                               0.1 * vecs.residual_scale(1) * unit, atol=1e-5)


def test_steering_errors_are_clear(llama_lm):
    vecs = tiny_vectors(llama_lm)
    with pytest.raises(SteeringError, match="unknown emotion 'hapy'.*happy"):
        build_steering(llama_lm, vecs, {"hapy": 0.1})
    with pytest.raises(SteeringError, match="unknown emotion"):
        build_steering(llama_lm, vecs, {"hapy": 0.0})  # a typo fails even at strength 0
    with pytest.raises(SteeringError, match="unknown position"):
        build_steering(llama_lm, vecs, {"happy": 0.1}, positions="middle")
    with pytest.raises(SteeringError, match="token range"):
        build_steering(llama_lm, vecs, {"happy": 0.1}, positions=(5, 2))
    for bad in (float("nan"), 1e300, -11.0):
        with pytest.raises(SteeringError, match="finite number within"):
            build_steering(llama_lm, vecs, {"happy": bad})
    with pytest.raises(LayerError):
        build_steering(llama_lm, vecs, {"happy": 0.1}, layers=9)
    no_norms = tiny_vectors(llama_lm, norms=False)
    with pytest.raises(SteeringError, match="residual norm"):
        build_steering(llama_lm, no_norms, {"happy": 0.1})
    rows = [{"happy": 0.5}, {"angry": 0.5}]
    with pytest.raises(SteeringError, match="2 rows of strengths but the batch has 3"), \
            steering(llama_lm, vecs, rows):
        llama_lm.generate_text(["a", "b", "c"], max_new_tokens=2)
    assert parse_strengths(["calm=0.1", "calm=0.05", "desperate=-0.1"]) == {
        "calm": pytest.approx(0.15), "desperate": -0.1}
    for bad in ("calm", "calm=x", "=0.1"):
        with pytest.raises(SteeringError, match="NAME=STRENGTH"):
            parse_strengths([bad])


# ---- KV cache = no cache -------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
@pytest.mark.parametrize("positions", ["all", "prompt", "generated", "assistant_start", (2, 5)])
def test_steering_with_kv_cache_equals_steering_without(arch, positions):
    lm = tiny_lm(arch)
    vecs = tiny_vectors(lm)
    prompt = lm.tokenizer(PROMPT)["input_ids"]
    n = 10
    with steering(lm, vecs, STRONG, layers="1,2", positions=positions), step_logits(lm) as seen:
        gen = lm.generate_text([PROMPT], max_new_tokens=n)[0].token_ids
    assert len(gen) == n
    plain = lm.generate_text([PROMPT], max_new_tokens=n)[0].token_ids
    if positions in ("all", "generated"):
        assert gen != plain  # the steering really changes the text
    # re-run the whole sequence without a cache at every step, under the same steering
    with steering(lm, vecs, STRONG, layers="1,2", positions=positions,
                  prompt_len=len(prompt)):
        for t in range(n):
            ref = no_cache_logits(lm, torch.tensor([prompt + gen[:t]]))
            assert int(ref.argmax()) == gen[t]
            torch.testing.assert_close(seen[t], ref, atol=1e-4, rtol=1e-4)


def test_kv_cache_equals_no_cache_in_a_left_padded_batch():
    lm = tiny_lm("llama")
    vecs = tiny_vectors(lm)
    prompts = [PROMPT, "I feel", "The quick brown fox jumps over"]
    enc = [lm.tokenizer(p)["input_ids"] for p in prompts]
    n = 8
    rows = [{"happy": 1.5}, {"angry": 1.5}, {"calm": -1.5}]
    for positions in ("generated", "prompt", (1, 3)):
        with steering(lm, vecs, rows, layers=1, positions=positions), step_logits(lm) as seen:
            outs = lm.generate_text(prompts, max_new_tokens=n)
        batch = lm.pad(enc, side="left")
        ids, mask = batch["input_ids"], batch["attention_mask"]
        width = ids.shape[1]
        with steering(lm, vecs, rows, layers=1, positions=positions, prompt_len=width):
            for t in range(n):
                gen = torch.tensor([o.token_ids[:t] + [0] * (t - len(o.token_ids[:t]))
                                    for o in outs], dtype=torch.long)
                live = torch.tensor([[int(j < o.n_tokens) for j in range(t)] for o in outs],
                                    dtype=torch.long).reshape(len(outs), t)
                ref = no_cache_logits(lm, torch.cat([ids, gen], 1), torch.cat([mask, live], 1))
                for r, o in enumerate(outs):
                    if t < o.n_tokens:
                        assert int(ref[r].argmax()) == o.token_ids[t]
                        torch.testing.assert_close(seen[t][r], ref[r], atol=1e-4, rtol=1e-4)


# ---- strength 0, per-row batches -----------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_strength_zero_is_bit_identical_to_no_steering(arch):
    lm = tiny_lm(arch)
    vecs = tiny_vectors(lm)
    batch = lm.encode(["I feel calm.", PROMPT], padding_side="left")
    with torch.inference_mode():
        base = lm.model(**batch).logits
        with steering(lm, vecs, {"happy": 0.0, "angry": 0.0}, layers="all"):
            assert all(not m._forward_hooks for m in lm.layers)  # nothing installed
            zero = lm.model(**batch).logits
    assert torch.equal(base, zero)
    plain = lm.generate_text(["I feel", PROMPT], max_new_tokens=8)
    # a zero row next to a steered row: the zero row is untouched bit for bit
    with steering(lm, vecs, [{"happy": 0.0}, {"happy": 2.0}], layers=1), \
            step_logits(lm) as mixed_logits:
        mixed = lm.generate_text(["I feel", PROMPT], max_new_tokens=8)
    with step_logits(lm) as plain_logits:
        lm.generate_text(["I feel", PROMPT], max_new_tokens=8)
    assert mixed[0].token_ids == plain[0].token_ids
    for a, b in zip(mixed_logits, plain_logits, strict=True):
        assert torch.equal(a[0], b[0])
    assert mixed[1].token_ids != plain[1].token_ids


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_per_row_batch_steering_equals_rows_alone(arch):
    lm = tiny_lm(arch)
    vecs = tiny_vectors(lm)
    prompts = ["I feel", PROMPT, [{"role": "user", "content": "Hello there"}], "The quick"]
    rows = [{"happy": 1.5}, {"angry": 1.5, "calm": -0.5}, {}, {"afraid": 1.0}]
    with steering(lm, vecs, rows, layers="1,2", positions="generated"), \
            step_logits(lm) as batch_logits:
        together = lm.generate_text(prompts, max_new_tokens=10)
    for r, (prompt, row) in enumerate(zip(prompts, rows, strict=True)):
        with steering(lm, vecs, row or {"happy": 0.0}, layers="1,2", positions="generated"), \
                step_logits(lm) as alone_logits:
            alone = lm.generate_text([prompt], max_new_tokens=10)[0]
        assert alone.token_ids == together[r].token_ids
        for t in range(alone.n_tokens):
            torch.testing.assert_close(batch_logits[t][r], alone_logits[t][0],
                                       atol=1e-4, rtol=1e-4)


# ---- guardrails ----------------------------------------------------------------------------
def test_guardrail_steering_is_off_before_the_alert_and_on_after():
    lm = tiny_lm("llama")
    vecs = tiny_vectors(lm)
    n = 10
    plain_steps = list(lm.stream(PROMPT, max_new_tokens=n, monitor=vecs))
    angry = np.array([s.scores[vecs.index("angry")] for s in plain_steps])
    k = 1 + int(np.argmax(angry[1:] > angry[:1]))  # first token rising above token 0
    assert angry[k] > angry[:k].max() and k <= n - 3
    thr = float(angry[:k].max() + angry[k]) / 2
    with step_logits(lm) as plain_logits:
        list(lm.stream(PROMPT, max_new_tokens=n, monitor=vecs))
    with step_logits(lm) as logits:
        steps = list(lm.stream(PROMPT, max_new_tokens=n, monitor=vecs,
                               guard=Guard(f"angry>{thr!r}", {"happy": 2.0}),
                               guard_layers=1))
    assert steps[k].alerts[0].rule == f"angry>{thr!r}"
    assert steps[k].alerts and not any(s.alerts for s in steps[:k])
    # forward j reads in token j-1 and samples token j.  Token k's alert is raised after
    # forward k+1, so forwards 0..k+1 are unsteered and forward k+2 on are steered.
    assert [s.token_id for s in steps[:k + 2]] == [s.token_id for s in plain_steps[:k + 2]]
    for j in range(k + 2):
        assert torch.equal(logits[j], plain_logits[j])
    assert not torch.allclose(logits[k + 2], plain_logits[k + 2], atol=1e-3)
    # after the switch, each forward equals a full re-run steered from token k+1 on
    prompt = lm.tokenizer(PROMPT)["input_ids"]
    gen = [s.token_id for s in steps]
    start = len(prompt) + k + 1
    with steering(lm, vecs, {"happy": 2.0}, layers=1, positions=(start, 10_000)):
        for j in range(k + 2, len(gen)):
            ref = no_cache_logits(lm, torch.tensor([prompt + gen[:j]]))
            torch.testing.assert_close(logits[j], ref, atol=1e-4, rtol=1e-4)
            assert int(ref.argmax()) == gen[j]


def test_char_span_tokens_maps_through_offsets(llama_lm):
    msgs = [{"role": "user", "content": "I feel calm today."}]
    enc = llama_lm.encode_chat(msgs)
    at = enc.text.index("calm")
    lo, hi = char_span_tokens(enc, at, at + 4)
    assert "calm" in enc.text[enc.offsets[lo][0]:enc.offsets[hi - 1][1]]
    assert all(enc.offsets[i][0] < at + 4 and enc.offsets[i][1] > at for i in range(lo, hi))
    with pytest.raises(SteeringError, match="covers no token"):
        char_span_tokens(enc, len(enc.text) + 5, len(enc.text) + 9)


# ---- the dose-response sweep ---------------------------------------------------------------
def test_steering_sweep_on_a_tiny_model_matches_a_manual_computation():
    from emolens.experiments.steering_sweep import steering_sweep
    from emolens.readout import read

    lm = tiny_lm("llama")
    vecs = tiny_vectors(lm)
    prompts = ["Hello there", "How was the letter?", "Tell me about the rain."]
    res = steering_sweep(lm, vecs, "happy", "angry", strengths=(0.8, -0.8, 0.0),
                         prompts=prompts, layers=1, read_layer=2, max_new_tokens=6,
                         design="separate", n_boot=200)
    assert res.strengths == [-0.8, 0.0, 0.8] and [p.n for p in res.points] == [3, 3, 3]
    assert res.control is not None and res.control.n == 3 and res.control.strength == 0.8
    for p in res.points + [res.control]:
        assert p.ci_low <= p.mean <= p.ci_high
        assert p.mean == pytest.approx(np.mean(p.values))
    # the +0.8 row of the second prompt, by hand: steer, generate, re-read unsteered
    msgs = [{"role": "user", "content": prompts[1]}]
    with steering(lm, vecs, {"happy": 0.8}, layers=1):
        g = lm.generate_text([msgs], max_new_tokens=6)[0]
    scores = read(lm, g.prompt_ids + g.token_ids, vecs, layer=2).scores[g.prompt_tokens:]
    want = (scores[:, vecs.index("happy")] - scores[:, vecs.index("angry")]).mean()
    assert res.points[2].values[1] == pytest.approx(want, abs=1e-5)
    with steering(lm, vecs, {"happy": 0.8}, layers=1):
        first = lm.generate_text([[{"role": "user", "content": prompts[0]}]], max_new_tokens=6)
    assert res.examples["+0.80"] == first[0].text
    effect = res.effect(n_boot=200)
    assert effect.mean == pytest.approx(res.points[2].mean - res.points[0].mean)
    assert "monotonic" in res.table() and res.to_json()["effect"]["n"] == 3
    # the contrast design steers along unit(happy - angry)
    con = steering_sweep(lm, vecs, "happy", "angry", strengths=(-0.8, 0.8), prompts=prompts[1:2],
                         layers=1, read_layer=2, max_new_tokens=6, random_control=False)
    with steering(lm, vecs, {vecs["happy"] - vecs["angry"]: -0.8}, layers=1):
        g = lm.generate_text([msgs], max_new_tokens=6)[0]
    scores = read(lm, g.prompt_ids + g.token_ids, vecs, layer=2).scores[g.prompt_tokens:]
    want = (scores[:, vecs.index("happy")] - scores[:, vecs.index("angry")]).mean()
    assert con.points[0].values == (pytest.approx(want, abs=1e-5),) and con.control is None
    with pytest.raises(EmolensError, match="design"):
        steering_sweep(lm, vecs, "happy", "angry", design="both")


@pytest.mark.integration
@pytest.mark.parametrize("positive,negative", [("happy", "sad"), ("calm", "desperate")])
def test_steering_moves_the_generated_texts_own_readout_monotonically(default_lm, positive,
                                                                      negative):
    from test_readout import default_model_vectors

    from emolens.experiments.steering_sweep import steering_sweep

    vecs = default_model_vectors(default_lm)
    res = steering_sweep(default_lm, vecs, positive, negative,
                         strengths=(-0.3, -0.15, 0.0, 0.15, 0.3), max_new_tokens=24)
    print(res.table())
    assert [p.n for p in res.points] == [12] * 5
    assert res.monotonic, res.table()
    effect = res.effect()
    assert effect.ci_low > 0, res.table()  # +0.3 vs -0.3, paired by prompt
    # a random direction at the same strength moves the contrast less than the sweep does
    assert abs(res.control.mean - res.points[2].mean) < effect.mean, res.table()
