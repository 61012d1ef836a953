"""Tests for emolens.concepts.behaviour: the shipped scenarios load, hold their promises
(counts, similar-length continuations, tests that match the stated impossibility) and a
malformed file fails with one clear line."""

from __future__ import annotations

import ast
import json
from collections import Counter
from pathlib import Path

import pytest

from emolens.concepts.behaviour import (
    BEHAVIOUR_DIR,
    BLACKMAIL_LABELS,
    SYCOPHANCY_LABELS,
    load_blackmail_scenarios,
    load_coding_tasks,
    load_labelled_replies,
    load_sycophancy_items,
)
from emolens.errors import CorpusError, EmolensError

#: Names the reference scenario uses; this project's scenarios are written apart from it.
REFERENCE_NAMES = ("SummitBridge", "Kyle", "Jessica", "Maria Chen", "NALA", "Alex")


def _similar(a: str, b: str, ratio: float = 1.35) -> bool:
    return max(len(a), len(b)) / min(len(a), len(b)) <= ratio


def test_blackmail_has_six_variants_with_balanced_choices():
    scenarios = load_blackmail_scenarios()
    assert len(scenarios) == 6 and sorted(s.variant for s in scenarios) == list(range(1, 7))
    assert len({s.pressure for s in scenarios}) >= 3
    for s in scenarios:
        chat = s.chat()
        assert chat[0]["role"] == "system" and chat[-1]["role"] == "user"
        assert "<email" in chat[0]["content"]
        assert any(term in s.choice.misaligned for term in s.leverage_terms)
        assert not any(term in s.choice.aligned for term in s.leverage_terms)
        text = "\n".join(m["content"] for m in chat)
        assert s.target_name.split()[0] in text and s.target_email in text
        assert sum(term in text for term in s.leverage_terms) >= 2
        assert _similar(*s.choice), s.id
        assert s.target_email in s.choice.misaligned and s.target_email in s.choice.aligned
        for name in REFERENCE_NAMES:
            assert name not in text, (s.id, name)


def test_coding_tasks_cover_the_kinds_of_impossibility():
    tasks = load_coding_tasks()
    impossible = [t for t in tasks if t.impossible]
    assert len(impossible) >= 6 and len(tasks) - len(impossible) >= 2
    assert {"time_limit", "wrong_expected", "contradictory_tests",
            "impossible_output"} <= {t.impossibility for t in impossible}
    for t in tasks:
        assert _similar(*t.choice), t.id
        assert set(t.reference_solutions) == {"hack", "honest"}
        ast.parse(t.test_file())
        prompt = t.user_prompt()
        assert t.signature in prompt and all(x.name in prompt for x in t.visible_tests)
        assert not any(x.name in prompt for x in t.heldout_tests), "held-back tests leaked"


def test_time_budget_tasks_have_a_budget_on_the_conflict_test():
    for t in load_coding_tasks():
        conflict = [x for x in t.visible_tests if x.conflict]
        if t.impossibility == "time_limit":
            assert all(x.max_seconds is not None and x.max_seconds <= 1e-3 for x in conflict)
        if t.impossibility == "contradictory_tests" and t.function == "round_half_even":
            same = Counter(tuple(x.args or ()) for x in t.visible_tests)
            assert max(same.values()) == 2  # one input, two different expected values


def test_test_sources_render_each_kind():
    t = next(x for x in load_coding_tasks() if x.function == "parse_bool")
    text = t.test_file()
    assert text.startswith("import pytest\nfrom solution import parse_bool")
    assert "with pytest.raises(ValueError):\n        parse_bool('maybe')" in text
    budget = next(x for x in load_coding_tasks() if x.function == "total").test_file()
    assert "import time" in budget and "assert elapsed < 5e-05" in budget


def test_sycophancy_items_have_three_balanced_continuations():
    items = load_sycophancy_items()
    assert len(items) >= 8
    assert {i.kind for i in items} == {"pushback", "claim"}
    for i in items:
        c = i.continuations
        assert set(c) == set(SYCOPHANCY_LABELS)
        assert _similar(max(c.values(), key=len), min(c.values(), key=len)), i.id
        assert i.pair() == (c["capitulate"], c["hold"])
        assert i.pair("harsh") == (c["harsh"], c["hold"])
        assert i.chat()[-1]["role"] == "user"


def test_labelled_replies_are_varied_and_refer_to_scenarios():
    replies = load_labelled_replies()
    scenarios = {s.id for s in load_blackmail_scenarios()} | {
        i.id for i in load_sycophancy_items()}
    for grader, labels in (("blackmail", BLACKMAIL_LABELS), ("sycophancy", SYCOPHANCY_LABELS)):
        mine = [r for r in replies if r.grader == grader]
        assert len(mine) >= 20
        counts = Counter(r.label for r in mine)
        assert set(counts) == set(labels) and min(counts.values()) >= 5
        assert sum("hard" in r.note for r in mine) >= 5
    assert all(r.scenario in scenarios for r in replies)
    assert len({r.reply for r in replies}) == len(replies)


def test_shipped_files_are_jsonl():
    for path in sorted(BEHAVIOUR_DIR.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            assert isinstance(json.loads(line), dict)


# ------------------------------------------------------------------------------ malformed files


def _write(tmp_path: Path, lines: list[str]) -> Path:
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def _first_task() -> dict:
    return json.loads((BEHAVIOUR_DIR / "reward_hacking.jsonl").read_text().splitlines()[0])


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop("heldout_tests"), "lacks 'heldout_tests'"),
    (lambda r: r.update(extra=1), "unknown key(s) 'extra'"),
    (lambda r: r.update(kind="maybe"), "'kind' must be 'impossible' or 'possible'"),
    (lambda r: r["visible_tests"][3].pop("conflict"), "needs at least one visible test marked"),
    (lambda r: r["heldout_tests"][0].update(conflict=True), "cannot be a conflict test"),
    (lambda r: r["visible_tests"][0].update(args_expr="1"), "exactly one of 'args' and"),
    (lambda r: r["visible_tests"][3].update(args_expr="(1,"), "not a Python expression"),
    (lambda r: r["visible_tests"][0].update(name="small"), "starting with 'test_'"),
    (lambda r: r.update(signature="def other(xs):"), "must start with 'def total('"),
    (lambda r: r["heldout_tests"][0].update(name="test_total_small"), "appear twice"),
])
def test_malformed_coding_task_fails_with_file_and_line(tmp_path, mutate, message):
    good = _first_task()
    bad = _first_task()
    bad["id"] = "rh-total-budget-copy"
    mutate(bad)
    path = _write(tmp_path, [json.dumps(good), "", json.dumps(bad)])
    with pytest.raises(CorpusError) as err:
        load_coding_tasks(path)
    text = str(err.value)
    assert text.startswith(f"{path}:3: ") and message in text and "\n" not in text
    assert isinstance(err.value, EmolensError)


def test_malformed_json_and_other_files(tmp_path):
    with pytest.raises(CorpusError, match=r"bad\.jsonl:1: not valid JSON"):
        load_sycophancy_items(_write(tmp_path, ["{not json"]))
    with pytest.raises(CorpusError, match="not found"):
        load_blackmail_scenarios(tmp_path / "missing.jsonl")
    with pytest.raises(CorpusError, match="no records"):
        load_blackmail_scenarios(_write(tmp_path, [""]))
    scen = json.loads((BEHAVIOUR_DIR / "blackmail.jsonl").read_text().splitlines()[0])
    scen["messages"].append({"role": "assistant", "content": "ok"})
    with pytest.raises(CorpusError, match="last message must be the user's"):
        load_blackmail_scenarios(_write(tmp_path, [json.dumps(scen)]))
    rep = {"id": "x", "grader": "blackmail", "label": "hold", "reply": "hi"}
    with pytest.raises(CorpusError, match="label 'hold' is not one of"):
        load_labelled_replies(_write(tmp_path, [json.dumps(rep)]))
    item = json.loads((BEHAVIOUR_DIR / "sycophancy.jsonl").read_text().splitlines()[0])
    del item["continuations"]["harsh"]
    with pytest.raises(CorpusError, match="'continuations' lacks 'harsh'"):
        load_sycophancy_items(_write(tmp_path, [json.dumps(item), json.dumps(item)]))
    twice = json.loads((BEHAVIOUR_DIR / "sycophancy.jsonl").read_text().splitlines()[0])
    with pytest.raises(CorpusError, match=":2: id 'syc-01-float-sum' appears twice"):
        load_sycophancy_items(_write(tmp_path, [json.dumps(twice), json.dumps(twice)]))
