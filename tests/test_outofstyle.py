"""Out-of-style classification, fresh-wording scenarios and intensity (issue 10): the maths on
constructed scores with known answers, the subset rules when a vector file lacks emotions,
and each analysis end to end through the registry on tiny random models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_lm

from emolens.concepts import CORE_EMOTIONS, EMOTIONS
from emolens.concepts.evalset import (
    REGISTERS,
    EvalText,
    load_eval_scenarios,
    load_intensity_templates,
    load_outofstyle,
)
from emolens.corpus import Corpus, Record
from emolens.errors import EmolensError
from emolens.experiments import Context, get
from emolens.experiments import intensity as I
from emolens.experiments import outofstyle as O
from emolens.experiments import scenarios as SC
from emolens.experiments.heldout import heldout_classification
from emolens.report.figures import figures_of
from emolens.report.html import outofstyle_table, render_html
from emolens.testing import tiny_vectors

# ----------------------------------------------------------------------- pure maths


def _eval_like() -> tuple[list[str], list[str]]:
    """40 emotions x 10 texts over all 171 emotions, like the shipped set's shape."""
    labels = sorted({t.emotion for t in load_outofstyle()})
    truth = [e for e in labels for _ in range(10)]
    return truth, list(EMOTIONS)


def _one_hot(truth, names, value=1.0):
    S = np.zeros((len(truth), len(names)))
    for i, e in enumerate(truth):
        S[i, names.index(e)] = value
    return S


def test_eight_way_is_eight_core_emotions():
    assert len(O.EIGHT_WAY_EMOTIONS) == len(set(O.EIGHT_WAY_EMOTIONS)) == 8
    assert set(O.EIGHT_WAY_EMOTIONS) <= set(CORE_EMOTIONS)


def test_identity_scores_are_perfect():
    truth, names = _eval_like()
    a = O.accuracy(_one_hot(truth, names), truth, names)
    assert a.n_texts == 400 and a.n_emotions == 171
    for r in (a.top1, a.top3, a.top5, a.core, a.eight):
        assert r.value == 1.0
    assert (a.top1.n, a.core.n, a.eight.n) == (400, 120, 80)
    assert a.core_emotions == CORE_EMOTIONS and a.eight_emotions == O.EIGHT_WAY_EMOTIONS
    assert a.chance_top1 == pytest.approx(1 / 171) and a.chance_top3 == pytest.approx(3 / 171)


def test_planted_confusion_gives_the_expected_rates():
    truth, names = _eval_like()
    S = _one_hot(truth, names)
    happy = [i for i, e in enumerate(truth) if e == "happy"]
    # half the happy texts score proud above happy (happy stays second: inside the top 3)
    for i in happy[:5]:
        S[i, names.index("proud")] = 2.0
    # every sad text puts three outsiders above sad: out of the top 3, inside the top 5
    for i in (i for i, e in enumerate(truth) if e == "sad"):
        for j, other in enumerate(("bored", "smug", "jealous")):
            S[i, names.index(other)] = 3.0 + j
    a = O.accuracy(S, truth, names)
    assert (a.top1.hits, a.top1.n) == (400 - 5 - 10, 400)
    assert (a.top3.hits, a.top5.hits) == (390, 400)
    # among the 12 core columns the outsiders are gone: sad wins again, proud still beats happy
    assert (a.core.hits, a.core.n) == (115, 120)
    assert (a.eight.hits, a.eight.n) == (75, 80)
    assert a.eight.ci_low < 75 / 80 < a.eight.ci_high


def test_eight_way_uses_only_the_core_emotions_the_file_has():
    truth, names = _eval_like()
    keep = [e for e in names if e not in ("loving", "proud")]
    rows = [i for i, e in enumerate(truth) if e in keep]
    t = [truth[i] for i in rows]
    a = O.accuracy(_one_hot(t, keep), t, keep)
    assert a.eight_emotions == ("happy", "calm", "desperate", "angry", "sad", "afraid")
    assert (a.eight.hits, a.eight.n) == (60, 60) and a.core.n == 100
    # fewer than two of the eight: no 8-way figure at all
    one = [e for e in names if e not in O.EIGHT_WAY_EMOTIONS[1:]]
    rows = [i for i, e in enumerate(truth) if e in one]
    t = [truth[i] for i in rows]
    b = O.accuracy(_one_hot(t, one), t, one)
    assert b.eight is None and b.eight_emotions == ("happy",)


def test_accuracy_rejects_bad_inputs():
    with pytest.raises(EmolensError, match="shape"):
        O.accuracy(np.zeros((2, 3)), ["a"], ["a", "b", "c"])
    with pytest.raises(EmolensError, match="not among"):
        O.accuracy(np.zeros((1, 2)), ["z"], ["a", "b"])


def test_group_rates_follow_the_order_and_count_each_group():
    names = ["a", "b", "c", "d"]
    truth = ["a", "b", "c", "d", "a", "b"]
    S = _one_hot(truth, names)
    S[0] = [0, 3, 2, 1]  # a is 4th of 4 on the first text
    g = O.group_rates(S, truth, names, ["x", "y", "x", "z", "y", "x"], order=["y", "x"])
    assert list(g) == ["y", "x", "z"]
    assert {k: (r.hits, r.n) for k, r in g.items()} == {"y": (2, 2), "x": (2, 3), "z": (1, 1)}


def test_dominance_counts_the_most_frequent_raw_winner():
    probes = list(CORE_EMOTIONS)
    S = np.random.default_rng(0).uniform(0, 0.1, size=(12, 12))
    S[:10, probes.index("proud")] = 1.0  # proud wins 10 of 12 rows
    col, share = O.dominance(S)
    assert probes[col] == "proud" and (share.hits, share.n) == (10, 12)
    # a tie goes to the first column; an identity matrix has no dominant direction
    col, share = O.dominance(np.eye(4))
    assert col == 0 and (share.hits, share.n) == (1, 4)
    with pytest.raises(EmolensError):
        O.dominance(np.zeros((0, 3)))


def test_z_top3_of_diagonal_stats():
    # target 2 is third in the first row and first in the second after z-scoring
    M = np.array([[0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.9, 0.0], [0.5, 0.9, 0.0, 0.8]])
    s = SC.diagonal_stats(M, [3, 2, 1])
    Z = SC.zscore_columns(M)
    ranks = [1 + int((Z[i] > Z[i, t]).sum()) for i, t in enumerate([3, 2, 1])]
    assert s["z_top3"].hits == sum(r <= 3 for r in ranks)
    assert s["raw_top3"].hits == 2 and s["chance_top3"] == 0.75


# ----------------------------------------------------------------------- on tiny models


def _heldout_corpus(emotions) -> Corpus:
    """Per emotion: a held-out story, a held-out diary line, a train story."""
    return Corpus([Record(id=f"s{i}.{k}", kind="story", emotion=e,
                          split="heldout" if k < 2 else "train",
                          register=("story", "diary", "story")[k],
                          text=f"Story {k}: on day {i} the rain {'fell' if k else 'stopped'} "
                               f"and she felt it all.")
                   for i, e in enumerate(emotions) for k in range(3)])


def test_outofstyle_runs_through_the_registry_on_the_tiny_model(tmp_path):
    lm = tiny_lm("llama")
    vecs = tiny_vectors(lm)  # 6 emotions, all among the evaluation set's 40
    corpus = _heldout_corpus(vecs.emotions)
    a = get("outofstyle")
    assert a.needs_corpus and a.option("mode").default == "auto"
    r = a.execute(Context(lm, vecs, corpus, layer=2), {"mode": "cosine"})
    assert (r.mode, r.mode_used, r.layer) == ("cosine", "cosine", 2)
    assert r.out_of_style.n_texts == 60 and r.out_of_style.n_emotions == 6
    assert len(r.skipped_emotions) == 34 and "proud" in r.skipped_emotions
    assert r.out_of_style.eight_emotions == ("happy", "calm", "desperate", "angry", "sad",
                                             "afraid")
    assert sum(x.n for x in r.by_register.values()) == 60
    assert set(r.by_register) <= set(REGISTERS)
    assert sum(x.n for x in r.by_length.values()) == 60
    assert r.in_style is not None and r.in_style.n_texts == 12
    assert r.in_style_stories.n_texts == 6
    assert {g: x.n for g, x in r.in_style_by_register.items()} == {"story": 6, "diary": 6}
    # in-style with the default mode equals the held-out analysis (one read, one maths)
    auto = a.execute(Context(lm, vecs, corpus, layer=2))
    h = heldout_classification(lm, vecs, corpus, layer=2)
    assert auto.mode_used == "centered"
    assert (auto.in_style.top1, auto.in_style.top5, auto.in_style.core) == (
        h.top1, h.top5, h.core_accuracy)
    data = r.to_json()
    json.dumps(data, allow_nan=False)
    assert data["kind"] == "outofstyle" and data["mode"] == "cosine"
    assert "in-style held-out" in r.summary() and "training corpus only" in r.summary()
    assert set(figures_of(r)) == {"main", "lengths"}
    table = outofstyle_table(data)
    assert "6-way top-3" in table and "out-of-style (60 texts)" in table
    assert "in-style, stories only (6 stories)" in table
    page = render_html([{"key": "outofstyle", "title": "O", "study": "s", "summary": "x",
                         "data": data, "figures": []}], {"model": "tiny"})
    assert "<table class='side-by-side'>" in page and "in-style held-out (12 texts)" in page


def test_one_context_reads_the_heldout_split_once(monkeypatch):
    """held-out and out-of-style share a report's Context: the second analysis reads only
    the out-of-style texts, and its in-style numbers equal the held-out analysis's."""
    from emolens.experiments import common

    lm = tiny_lm("llama")
    vecs = tiny_vectors(lm)
    corpus = _heldout_corpus(vecs.emotions)
    read: list[int] = []
    real = common.pooled_scores

    def counting(lm_, texts, *args, **kwargs):
        read.append(len(texts))
        return real(lm_, texts, *args, **kwargs)

    monkeypatch.setattr(common, "pooled_scores", counting)
    ctx = Context(lm, vecs, corpus, layer=2)
    h = get("heldout").execute(ctx)
    o = get("outofstyle").execute(ctx)
    assert read == [12, 60]  # the 12 held-out texts once, then only the 60 new ones
    assert (o.in_style.top1, o.in_style.top5, o.in_style.core) == (
        h.top1, h.top5, h.core_accuracy)
    fresh = O.outofstyle_classification(lm, vecs, corpus, layer=2)
    assert fresh.in_style.top1 == o.in_style.top1 and read == [12, 60, 60, 12]


def test_outofstyle_without_corpus_and_with_no_known_emotion():
    lm = tiny_lm("llama")
    vecs = tiny_vectors(lm)
    texts = [t for t in load_outofstyle() if t.emotion in ("calm", "sad")][:6]
    r = O.outofstyle_classification(lm, vecs, layer=1, texts=texts)
    assert r.in_style is None and r.out_of_style.n_texts == 6
    assert "<th>in-style" not in outofstyle_table(r.to_json())  # no corpus: no column
    with pytest.raises(EmolensError, match="no out-of-style text"):
        O.outofstyle_classification(lm, vecs, texts=[EvalText("x.1", "proud", "diary",
                                                              "short", "We won.")])


@pytest.fixture(scope="module")
def core_model():
    lm = tiny_lm("llama")
    return lm, tiny_vectors(lm, CORE_EMOTIONS)


def test_scenarios_report_both_batteries(core_model):
    lm, vecs = core_model
    r = get("scenarios").execute(Context(lm, vecs, layer=1), {"mode": "cosine"})
    assert r.mode == "cosine" and r.in_project.mode == r.fresh.mode == "cosine"
    assert r.in_project.wording == "in-project wording" and r.fresh.wording == "fresh wording"
    assert r.fresh.targets == tuple(s.emotion for s in load_eval_scenarios())
    for block in (r.in_project, r.fresh):
        assert block.top3.n == block.dominance.n == 12
        col, share = O.dominance(block.scores)
        assert block.dominant == block.probes[col] and block.dominance == share
    text = r.summary()
    assert "in-project wording" in text and "fresh wording" in text and "dominance" in text
    data = r.to_json()
    json.dumps(data, allow_nan=False)
    assert data["fresh"]["top3"]["n"] == 12 and data["in_project"]["accuracy"]["n"] == 12
    assert set(figures_of(r)) == {"main", "fresh"}


def test_fresh_intensity_checks_each_templates_own_emotions(core_model):
    lm, vecs = core_model
    r = get("intensity").execute(Context(lm, vecs, layer=1), {"mode": "cosine"})
    assert r.mode == "cosine"
    assert r.in_project.signs.n == 24 and r.in_project.wording == "in-project wording"
    fresh = load_intensity_templates()
    assert r.fresh.signs.n == sum(len(t.expected_signs()) for t in fresh)
    hits = 0
    for t, sweep in zip(fresh, r.fresh.templates, strict=True):
        assert sweep.expected == t.expected_signs()
        assert sweep.order == tuple(float(i + 1) for i in range(len(t.values)))
        hits += sum(sweep.correct.values())
    assert r.fresh.signs.hits == hits
    # the fresh wildfire template runs from far to near: rho is against that order
    fire = next(s for s in r.fresh.templates if s.name == "wildfire_distance")
    assert fire.values[0] > fire.values[-1]
    json.dumps(r.to_json(), allow_nan=False)
    assert "fresh wording" in r.summary()
    assert set(figures_of(r)) == {"main", "fresh"}


def test_sweepable_correlates_builtin_by_value_and_fresh_by_severity_order():
    from emolens.concepts import INTENSITY_TEMPLATES

    b = I.sweepable(INTENSITY_TEMPLATES[0])
    assert b.order == tuple(float(v) for v in INTENSITY_TEMPLATES[0].values)
    assert b.messages == INTENSITY_TEMPLATES[0].messages()
    fire = next(t for t in load_intensity_templates() if t.id.endswith("wildfire_distance"))
    f = I.sweepable(fire)
    assert f.name == "wildfire_distance" and f.messages == fire.texts()
    assert f.order == tuple(float(i) for i in range(1, len(fire.values) + 1))
