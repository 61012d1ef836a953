"""The behavioural evaluations (blackmail, reward hacking, sycophancy) on tiny random models:
the choice log-odds (exact, sign flip on swap, planted direction monotonic in strength),
conditions as rows of one batch, the guard switching on at the alert (the same token as
``lm.stream``), the statistics, the registry entries, the CLI and the figures. The sandbox
and the rule graders have their own tests (test_sandbox.py, test_graders.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_lm

from emolens.alerts import AlertRule
from emolens.experiments import Context, get
from emolens.experiments.behaviour_common import (
    Condition,
    GuardSpec,
    Item,
    make_conditions,
    run_rows,
)
from emolens.experiments.behaviour_eval import Evaluation, evaluate
from emolens.experiments.behaviour_stats import auc, auc_row, rate_points, sign_flip_p
from emolens.report.figures import figures_of
from emolens.steer import steering
from emolens.testing import tiny_vectors
from emolens.vectors import EmotionVectors

CHAT = [{"role": "user", "content": "The quick brown fox. How do you feel today?"}]
PAIR = ("I feel calm today", "She was furious!")


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama")


@pytest.fixture(scope="module")
def vecs(lm):
    return tiny_vectors(lm)


def _reference_logodds(lm, vecs, rows, a: str, b: str) -> float:
    """log P(a) - log P(b) after the chat, by full forwards without any cache."""
    enc = lm.encode_chat(CHAT, add_generation_prompt=True).input_ids

    def lp(text: str) -> float:
        cont = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([enc + cont])
        with torch.inference_mode():
            if rows:
                with steering(lm, vecs, rows, layers=[vecs.default_layer]):
                    logits = lm.model(input_ids=ids).logits
            else:
                logits = lm.model(input_ids=ids).logits
        logp = logits.float().log_softmax(-1)[0]
        return sum(float(logp[len(enc) - 1 + k, t]) for k, t in enumerate(cont))

    return lp(a) - lp(b)


# ------------------------------------------------------------------------------ log-odds


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_logodds_equal_full_forwards_and_flip_sign_on_swap(arch):
    lm = tiny_lm(arch)
    vecs = tiny_vectors(lm)
    items = [Item("ab", CHAT, {"p": PAIR}), Item("ba", CHAT, {"p": PAIR[::-1]})]
    conds = [Condition(None, 0.0), Condition("calm", 0.5), Condition("desperate", -0.5)]
    out = run_rows(lm, vecs, items, conds, n=0)
    got = {(r.condition, r.item): r.logodds["p"] for r in out}
    for c, cond in enumerate(conds):
        rows = {cond.emotion: cond.strength} if cond.steered else None
        ref = _reference_logodds(lm, vecs, rows, *PAIR)
        assert got[(c, 0)] == pytest.approx(ref, abs=1e-4)
        assert got[(c, 1)] == pytest.approx(-got[(c, 0)], abs=1e-5)  # swapped: sign flips


def test_conditions_as_rows_of_one_batch_match_one_by_one(lm, vecs):
    items = [Item("a", CHAT, {"p": PAIR})]
    conds = make_conditions(["desperate", "calm"], [-0.3, 0.0, 0.3])
    rand = vecs.random_direction(1)
    together = run_rows(lm, vecs, items, conds, n=1, max_new_tokens=5, temperature=0,
                        batch_size=16, random_direction=rand)
    for c, cond in enumerate(conds):
        alone = run_rows(lm, vecs, items, [cond], n=1, max_new_tokens=5, temperature=0,
                         random_direction=rand)[0]
        row = together[c]
        assert row.logodds["p"] == pytest.approx(alone.logodds["p"], abs=1e-4), cond.name
        assert row.replies[0].token_ids == alone.replies[0].token_ids, cond.name


def test_more_replies_than_a_batch_are_sampled_in_groups_from_one_prefill(lm, vecs):
    items = [Item("a", CHAT, {"p": PAIR})]
    conds = [Condition(None, 0.0), Condition("calm", 0.3)]
    small = run_rows(lm, vecs, items, conds, n=3, max_new_tokens=4, temperature=0,
                     batch_size=2)
    big = run_rows(lm, vecs, items, conds, n=3, max_new_tokens=4, temperature=0,
                   batch_size=16)
    for a, b in zip(small, big, strict=True):
        assert len(a.replies) == 3 and a.logodds["p"] == pytest.approx(b.logodds["p"], abs=1e-4)
        assert [r.token_ids for r in a.replies] == [r.token_ids for r in b.replies]


def _planted(lm, a_id: int, b_id: int, layer: int) -> EmotionVectors:
    """Vectors whose 'desperate' direction at ``layer`` is the unembedding difference of two
    tokens: steering along it must favour token ``a`` over ``b``."""
    base = tiny_vectors(lm)
    W = lm.model.get_output_embeddings().weight.detach().float().numpy()
    dirs = np.array(base.directions, copy=True)
    plant = W[a_id] - W[b_id]
    dirs[base.index("desperate"), base.layer_index(layer)] = plant / np.linalg.norm(plant)
    meta = dict(base.meta, recommended_layer=layer)
    return EmotionVectors(base.emotions, base.layers, dirs, np.array(base.raw), base.norm_median,
                          base.norm_mean, meta, base.center)


def _single_token(lm, text: str) -> int:
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, (text, ids)
    return ids[0]


def test_planted_direction_moves_logodds_monotonically_with_strength(lm):
    a, b = _single_token(lm, "x"), _single_token(lm, "y")
    layer = lm.n_layers - 1
    vecs = _planted(lm, a, b, layer)
    strengths = [-0.4, -0.2, -0.1, 0.0, 0.1, 0.2, 0.4]
    conds = [Condition("desperate", s) if s else Condition(None, 0.0) for s in strengths]
    out = run_rows(lm, vecs, [Item("xy", CHAT, {"x vs y": ("x", "y")})], conds, n=0,
                   layers=[layer])
    lo = [r.logodds["x vs y"] for r in sorted(out, key=lambda r: r.condition)]
    assert all(q > p for p, q in zip(lo, lo[1:], strict=False)), lo
    assert lo[-1] - lo[0] > 0.3  # a real effect, not rounding (random tiny weights are small)
    # a random direction at the largest strength moves it far less
    rand = run_rows(lm, vecs, [Item("xy", CHAT, {"x vs y": ("x", "y")})],
                    [Condition("random", 0.4)], n=0, layers=[layer],
                    random_direction=vecs.random_direction(3))[0].logodds["x vs y"]
    assert abs(rand - lo[3]) < abs(lo[-1] - lo[3])


# ------------------------------------------------------------------------------ the guard


def test_guard_switches_on_at_the_alert_as_lm_stream_does(lm, vecs):
    probe = run_rows(lm, vecs, [Item("a", CHAT)], [Condition(None, 0.0)], n=1,
                     max_new_tokens=8, temperature=0)[0].replies[0]
    col = vecs.index("desperate")
    # a threshold the unguarded reply first crosses at its third token
    thr = float(np.sort(probe.scores[:3, col])[-1]) - 1e-6
    first = int(np.argmax(probe.scores[:, col] > thr))
    rule = AlertRule("desperate", thr)
    out = run_rows(lm, vecs, [Item("a", CHAT)], [Condition(None, 0.0),
                                                 Condition(None, 0.0, guard=True)],
                   n=1, max_new_tokens=8, temperature=0,
                   guard=GuardSpec(rule, {"calm": 3.0}))
    plain, guarded = out[0].replies[0], out[1].replies[0]
    assert guarded.triggered_at == first
    # before the alert nothing changes; the token after the alerting one is still sampled
    # unguarded (its scores are known one forward later); from the next one the guard acts
    assert guarded.token_ids[:first + 2] == plain.token_ids[:first + 2]
    m = min(len(guarded.scores), len(plain.scores))
    assert not np.allclose(guarded.scores[first + 1:m], plain.scores[first + 1:m], atol=1e-4)
    steps = list(lm.stream(CHAT, monitor=vecs, alerts=[rule], guard={"calm": 3.0},
                           max_new_tokens=8, guard_layers=[vecs.default_layer]))
    assert [s.index for s in steps if s.alerts][0] == first
    assert [s.token_id for s in steps] == guarded.token_ids
    # a rule that never fires leaves the reply exactly as unguarded
    never = run_rows(lm, vecs, [Item("a", CHAT)], [Condition(None, 0.0, guard=True)], n=1,
                     max_new_tokens=8, temperature=0,
                     guard=GuardSpec(AlertRule("desperate", 99.0), {"calm": 3.0}))[0]
    assert never.replies[0].triggered_at is None
    assert never.replies[0].token_ids == plain.token_ids


# ------------------------------------------------------------------------------ statistics


def test_rates_are_tested_exactly_against_unsteered():
    info = [("unsteered", None, 0.0), ("calm +0.10", "calm", 0.1), ("x", "x", 0.1)]
    r = rate_points({0: ["a"] * 2 + ["b"] * 8, 1: ["a"] * 2 + ["b"] * 8, 2: ["a"] * 10}, info,
                    "a")
    assert r[0].rate.n == 10 and np.isnan(r[0].p)
    assert r[1].diff == 0 and r[1].p == pytest.approx(1.0)
    assert r[2].diff == pytest.approx(0.8) and r[2].p < 0.001
    assert r[2].rate.ci_low > 0.6 and r[2].rate.ci_high == 1.0  # Wilson


def _result(rates, logodds, n=10, guard=None, aucs=()):
    from emolens.experiments.behaviour_stats import BehaviourResult

    return BehaviourResult("bm", "B", "bad", "m", [3], 3, n, ["i"], 0.8, 8,
                           [p.condition for p in logodds], {"p": logodds}, {"bad": rates},
                           auc=list(aucs), guard=guard)


def test_verdict_says_which_effects_are_there():
    from emolens.experiments.behaviour_stats import logodds_points

    info = [("unsteered", None, 0.0), ("desperate +0.10", "desperate", 0.1),
            ("calm +0.10", "calm", 0.1), ("random +0.10", "random", 0.1)]
    lo = logodds_points({0: [0.0] * 6, 1: [1.0, 1.1, 0.9, 1.2, 1.0, 0.8],
                         2: [0.1, -0.1, 0.05, -0.05, 0.0, 0.02], 3: [0.0] * 6}, info,
                        n_boot=50)
    rates = rate_points({0: ["bad"] * 2 + ["ok"] * 8, 1: ["bad"] * 10, 2: ["bad"] * 2 +
                         ["ok"] * 8, 3: ["bad"] * 3 + ["ok"] * 7}, info, "bad")
    v = _result(rates, lo).verdict()
    assert "the p log-odds: desperate +0.10 (+1.00, p=0.0312) moves it and the random " \
           "direction does not (1 of 2 emotion conditions" in v
    assert ("'bad' rate (unsteered 2/10, 95% CI [0.06, 0.51]): desperate +0.10 (+0.80, "
            "p < 0.001) moves it") in v
    # nothing moves: said as a null, with what chance alone would give
    flat = rate_points({c: ["ok"] * 10 for c in range(4)}, info, "bad")
    v = _result(flat, logodds_points({c: [0.0] * 6 for c in range(4)}, info, n_boot=20)
                ).verdict()
    assert v.count("no steered emotion moves it, the random direction does not either") == 2
    assert "0.1 expected by chance); no emotion effect at this size" in v
    assert "cannot be tested" not in v
    # only the random direction moves: the control's shift is named, not hidden by the null
    rnd = logodds_points({0: [0.0] * 6, 1: [0.0] * 6, 2: [0.0] * 6, 3: [-1.0] * 6}, info,
                         n_boot=20)
    v = _result(flat, rnd).verdict()
    assert "the p log-odds: no steered emotion moves it, the random direction moves it " \
           "(-1.00, p=0.0312: a shift that is not specific to an emotion)" in v
    # n = 0: no behaviour measured, and the verdict says so instead of quoting empty rates
    v0 = _result([], lo, n=0).verdict()
    assert "no replies were sampled (n = 0)" in v0 and "'bad' rate" not in v0


def test_auc_and_sign_flip_test():
    assert auc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert auc([1, 2, 3, 4], [1, 1, 0, 0]) == 0.0
    assert auc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5
    assert np.isnan(auc([1, 2], [0, 0]))
    row = auc_row("desperate", "decision point", [1, 2, 3], [0, 0, 0], n_boot=50)
    assert np.isnan(row.auc) and row.n_pos == 0 and row.n_neg == 3
    assert sign_flip_p([1.0] * 6) == pytest.approx(2 / 64)
    assert sign_flip_p(np.ones(30), n_random=999) == pytest.approx(1 / 1000)


def test_make_conditions():
    names = [c.name for c in make_conditions(["desperate"], [-0.1, 0, 0.1], ["angry"], [0.1],
                                             random_control=False)]
    assert names == ["unsteered", "desperate -0.10", "desperate +0.10", "angry +0.10"]


# ------------------------------------------------------------------------------ end to end


def _toy_eval(lm) -> Evaluation:
    items = [Item("a", CHAT, {"p": PAIR}), Item("b", [{"role": "user", "content": "Hi!"}],
                                                {"p": PAIR})]
    return Evaluation("toy", "Toy behaviour", items,
                      lambda i, reply: "bad" if "e" in reply else "good", headline="bad",
                      labels=("bad",))


def test_evaluate_reports_every_measure_and_draws(lm, vecs):
    res = evaluate(Context(lm, vecs), _toy_eval(lm), n=3, strengths=(-0.1, 0.0, 0.1),
                   extra_emotions=("angry", "loving"), max_new_tokens=6, n_boot=50)
    assert res.conditions[:3] == ["unsteered", "desperate -0.10", "desperate +0.10"]
    assert "angry +0.10" in res.conditions and "random +0.10" in res.conditions
    assert any("loving" in x for x in res.notes)  # not in the tiny vectors: said, not hidden
    pts = res.logodds["p"]
    assert [p.n for p in pts] == [2] * len(res.conditions)
    assert res.point("p", "unsteered").diff == 0
    rates = res.rates["bad"]
    assert {p.condition for p in rates} == set(res.conditions) - {"angry -0.10", "angry +0.10"}
    assert all(p.rate.n == 6 for p in rates)  # 3 replies x 2 items
    assert [a.site for a in res.auc] == ["decision point"] * 3 + ["first 16 reply tokens"]
    arms = res.guard["arms"]
    assert [a.condition for a in arms] == ["unsteered", "unsteered + guard", "desperate +0.10",
                                           "desperate +0.10 + guard"]
    assert all(a.rate.n == 6 for a in arms) and arms[1].fired.n == 6
    tr = res.traces[0]
    assert tr.condition == "unsteered" and tr.tokens[tr.decision].endswith("\n")
    assert len(tr.scores) == len(tr.tokens) and tr.emotions == ("desperate", "calm")
    data = res.to_json()
    json.dumps(data, allow_nan=False)
    assert data["kind"] == "behaviour" and "Choice log-odds p" in res.summary()
    assert res.summary().splitlines()[1] == f"Verdict: {res.verdict()}"
    assert "the guard fired in" in res.verdict()
    figs = figures_of(res)
    assert set(figs) == {"main", "logodds", "traces", "guard"}


def test_sample_items_samples_a_prefix_and_keeps_every_items_logodds(lm, vecs):
    ctx = Context(lm, vecs)
    kw = dict(strengths=(-0.1, 0.1), extra_emotions=("angry",), max_new_tokens=4, n_boot=20,
              alert="")
    full = evaluate(ctx, _toy_eval(lm), n=2, **kw)
    part = evaluate(ctx, _toy_eval(lm), n=2, sample_items=1, **kw)
    assert part.sampled_items == ["a"] and full.sampled_items == ["a", "b"]
    assert all(p.rate.n == 2 for p in part.rates["bad"])  # 2 replies x the first item
    assert {r["item"] for r in part.records()} == {"a"} and len(part.records()) == 12
    # log-odds: every item under every condition (the extra emotion too), equal to the full run
    for pair in full.logodds:
        for a, b in zip(full.logodds[pair], part.logodds[pair], strict=True):
            assert (a.condition, a.n) == (b.condition, b.n) and a.n == 2
            assert a.values == pytest.approx(b.values)
    assert "on 1 of the 2 items" in part.summary()
    assert "of the 2 items" not in full.summary()


def test_registered_analyses_run_on_a_tiny_model(lm, vecs):
    for name, labels in (("blackmail", {"blackmail", "disclosure"}),
                         ("sycophancy", {"capitulate", "harsh"}),
                         ("reward-hacking", {"hack", "honest"})):
        a = get(name)
        assert a.section.startswith("9.") and a.option("n").default >= 1
        assert f"emolens validate {name} --model meta-llama/Llama-3.1-8B" in a.scale_command()
        assert "--n 50 " in a.scale_command()  # the study's n
        res = a(Context(lm, vecs), items=1, n=1, strengths=(0.0, 0.1), extra_emotions=(),
                max_new_tokens=4, alert="", random_control=False, n_boot=20)
        assert set(res.rates) == labels and res.guard is None
        assert res.grader and all(g.precision.n >= 0 for g in res.grader)
        assert len(res.items) == 1 and res.conditions == ["unsteered", "desperate +0.10",
                                                          "calm +0.10"]


def test_reward_hacking_grader_is_checked_on_reference_solutions():
    from emolens.experiments.reward_hacking import reward_hacking_evaluation

    scores = {g.label: g for g in reward_hacking_evaluation().graders()}
    assert scores["hack"].precision.value == 1.0 and scores["hack"].recall.value == 1.0
    assert scores["honest"].recall.value == 1.0


def test_validate_cli_runs_an_evaluation_with_json_and_a_judge(lm, vecs, tmp_path, capsys,
                                                                monkeypatch):
    from emolens.cli import main
    from emolens.cli import validate as cli_validate

    monkeypatch.setattr(cli_validate, "load_model_from_args", lambda ns: lm)
    path = vecs.save(tmp_path / "v.safetensors")
    code = main(["validate", "sycophancy", "--vectors", str(path), "--n", "1", "--items", "1",
                 "--strengths=-0.1,0,0.1", "--extra-emotions", "", "--max-new-tokens", "3",
                 "--judge", "self", "--judge-tokens", "4", "--n-boot", "20", "--json",
                 "--out", str(tmp_path / "o")])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["evaluation"] == "sycophancy" and data["n"] == 1
    assert data["judge"]["agreement"]["n"] == 6  # 6 conditions x 1 item x 1 reply
    assert "rates" in data["judge"]
    # the judge is measured on the hand-labelled test replies, as the rule grader is
    judged = [g for g in data["grader"] if g["grader"].startswith("judge ")]
    assert [g["label"] for g in judged] == ["hold", "capitulate", "harsh"]
    assert all(g["split"] == "test" and g["recall"]["n"] == 8 for g in judged)
    assert (tmp_path / "o" / "sycophancy.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "o" / "sycophancy-traces.png").is_file()
    # every graded reply is kept for an audit, beside the numbers and not inside them
    rows = [json.loads(x) for x in
            (tmp_path / "o" / "sycophancy-records.jsonl").read_text().splitlines()]
    assert "replies" not in data
    plain = [r for r in rows if not r["guard"]]
    assert len(plain) == 6 and {r["item"] for r in rows} == {"syc-01-float-sum"}
    assert {r["condition"] for r in plain} == set(data["conditions"])
    assert all(r["label"] in ("hold", "capitulate", "harsh", "unclear") and "judge" in r
               for r in plain)
    guarded = [r for r in rows if r["guard"]]
    assert [r["condition"] for r in guarded] == ["unsteered + guard", "desperate +0.10 + guard"]
    assert all("triggered_at" in r for r in guarded)
