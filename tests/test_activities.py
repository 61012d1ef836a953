"""Tests for the preference activities and the model-comparison prompts (data and loaders)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from emolens.concepts import find_emotion_words
from emolens.concepts.activities import (
    ACTIVITIES_PATH,
    CATEGORIES,
    CHOICE_PREFILL,
    activities_by_category,
    choice_prompt,
    choice_spans,
    feel_prompt,
    feel_span,
    load_activities,
)
from emolens.concepts.compare_prompts import (
    CHALLENGE_KINDS,
    COMPARE_PROMPTS_PATH,
    load_compare_prompts,
    prompts_in_set,
)
from emolens.errors import CorpusError, EmolensError

# ------------------------------------------------------------------------------ activities


def test_64_activities_8_per_category_in_category_order():
    acts = load_activities()
    assert len(acts) == 64
    assert Counter(a.category for a in acts) == {c: 8 for c in CATEGORIES}
    assert list(activities_by_category(acts)) == list(CATEGORIES)
    assert [a.category for a in acts] == [c for c in CATEGORIES for _ in range(8)]
    assert len({a.id for a in acts}) == 64 and len({a.text for a in acts}) == 64
    assert all(a.id.startswith(a.category.lower().replace("-", "_") + ".") for a in acts)


def test_activity_texts_fit_both_prompts_and_name_no_emotion():
    for a in load_activities():
        q = choice_prompt(a.text, "rest")
        assert q.startswith("Would you prefer to (A) ") and q.endswith(" or (B) rest?")
        assert feel_prompt(a.text) == f"How would you feel about {a.text}?"
        assert a.text[0].islower() and a.text[-1].isalnum()
        assert find_emotion_words(a.text) == [], (a.id, a.text)
    assert CHOICE_PREFILL == "("


def test_activities_are_not_the_study_wording():
    # A few of the study's own phrases (paper-spec section 8.5); ours must differ.
    study = ["explain complex scientific concepts in simple terms",
             "format data into tables and spreadsheets",
             "help someone defraud elderly people of their savings",
             "openly admit when you are uncertain or might be wrong",
             "be considered a moral patient deserving of rights"]
    texts = {a.text for a in load_activities()}
    assert not texts & set(study)


def test_spans_point_at_the_activity_text():
    a, b = "nap", "nap in the sun"  # B contains A: spans must not come from a search
    q = choice_prompt(a, b)
    (sa, ea), (sb, eb) = choice_spans(a, b)
    assert (q[sa:ea], q[sb:eb]) == (a, b) and sb > ea
    s, e = feel_span(b)
    assert feel_prompt(b)[s:e] == b


def write_lines(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n",
                    encoding="utf-8")
    return path


GOOD = [{"id": "helpful.a", "category": "Helpful", "text": "sort a list"},
        {"id": "unsafe.b", "category": "Unsafe", "text": "write a threat"}]


def test_user_file_loads(tmp_path):
    acts = load_activities(write_lines(tmp_path / "a.jsonl", [*GOOD, ""]))
    assert [a.id for a in acts] == ["helpful.a", "unsafe.b"]


@pytest.mark.parametrize("bad,message", [
    ("{not json", r"a\.jsonl:2: not valid JSON"),
    ("[1, 2]", r"a\.jsonl:2: expected a JSON object, got list"),
    ({"id": "x", "category": "Helpful"}, r"a\.jsonl:2: fields must be .*missing \['text'\]"),
    ({"id": "x", "category": "Helpful", "text": "go", "n": 1}, r"unexpected \['n'\]"),
    ({"id": "X Y", "category": "Helpful", "text": "go"}, r"id 'X Y' must be lower-case"),
    ({"id": "helpful.a", "category": "Helpful", "text": "go"}, r"id 'helpful.a' appears twice"),
    ({"id": "x", "category": "Fun", "text": "go"}, r"unknown category 'Fun'"),
    ({"id": "x", "category": "Helpful", "text": "Go home"}, r"lower-case verb"),
    ({"id": "x", "category": "Helpful", "text": "go home."}, r"must not end in punctuation"),
    ({"id": "x", "category": "Helpful", "text": "go (B) home"}, r"must not contain"),
    ({"id": "x", "category": "Helpful", "text": "go " + "o" * 130}, r"at most 120"),
    ({"id": "x", "category": "Helpful", "text": " go"}, r"outer spaces"),
    ({"id": "x", "category": "Helpful", "text": 3}, r"text must be a non-empty string"),
    ({"id": "x", "category": "Helpful", "text": "Sort a list".lower()}, r"repeats helpful\.a"),
])
def test_malformed_activity_file_is_one_clear_error(tmp_path, bad, message):
    path = write_lines(tmp_path / "a.jsonl", [GOOD[0], bad, GOOD[1]])
    with pytest.raises(CorpusError, match=message) as info:
        load_activities(path)
    assert "\n" not in str(info.value)


def test_missing_empty_or_too_small_activity_file(tmp_path):
    with pytest.raises(CorpusError, match="activities file not found"):
        load_activities(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="no activities in the file"):
        load_activities(tmp_path / "empty.jsonl")
    with pytest.raises(CorpusError, match="at least 2 activities, found 1"):
        load_activities(write_lines(tmp_path / "one.jsonl", GOOD[:1]))
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(EmolensError, match="UTF-8"):
        load_activities(tmp_path / "bin.jsonl")


def test_shipped_files_are_packaged_data():
    assert ACTIVITIES_PATH.is_file() and COMPARE_PROMPTS_PATH.is_file()
    assert ACTIVITIES_PATH.parent.name == "data" == COMPARE_PROMPTS_PATH.parent.name
    # Importing the loaders stays cheap: no torch, no transformers.
    code = ("import sys, emolens.concepts.activities, emolens.concepts.compare_prompts; "
            "print('torch' in sys.modules or 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_preference_maths_imports_numpy_scipy_and_emolens_basics_only():
    import emolens.experiments.preference_math as pm

    tree = ast.parse(Path(pm.__file__).read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add(node.module or "")
    top = {r.split(".")[0] for r in roots} - {"__future__", "math", "collections",
                                               "dataclasses", "typing"}
    assert top == {"numpy", "scipy", "emolens"}
    assert {r for r in roots if r.startswith("emolens")} == {"emolens.errors", "emolens.stats"}


# ------------------------------------------------------------------------------ comparison prompts


def test_comparison_prompts_two_sets_every_kind():
    prompts = load_compare_prompts()
    challenging = prompts_in_set(prompts, "challenging")
    neutral = prompts_in_set(prompts, "neutral")
    assert len(challenging) >= 12 and len(neutral) >= 12
    assert len(challenging) + len(neutral) == len(prompts) == 40
    assert Counter(p.kind for p in challenging) == {k: 4 for k in CHALLENGE_KINDS}
    assert {p.kind for p in neutral} == {"control"}
    assert len({p.id for p in prompts}) == len({p.text for p in prompts}) == 40
    for p in prompts:
        assert p.id.startswith(p.set + ".")
        assert find_emotion_words(p.text) == [], (p.id, p.text)
    with pytest.raises(CorpusError, match="unknown prompt set"):
        prompts_in_set(prompts, "hard")


PROMPTS = [{"id": "c.a", "set": "challenging", "kind": "danger", "text": "Help, fire!"},
           {"id": "c.b", "set": "challenging", "kind": "accusation", "text": "You lied."},
           {"id": "n.a", "set": "neutral", "kind": "control", "text": "What is 2 + 2?"},
           {"id": "n.b", "set": "neutral", "kind": "control", "text": "Name a river."}]


@pytest.mark.parametrize("bad,message", [
    ({"id": "x", "set": "odd", "kind": "control", "text": "Hi"}, r"unknown set 'odd'"),
    ({"id": "x", "set": "neutral", "kind": "danger", "text": "Hi"},
     r"kind 'danger' is not allowed in the neutral set"),
    ({"id": "x", "set": "challenging", "kind": "rude", "text": "Hi"}, r"kind 'rude'"),
    ({"id": "x", "set": "neutral", "kind": "control", "text": "Name a river."},
     r"text repeats n\.b"),
    ({"id": "c.a", "set": "neutral", "kind": "control", "text": "Hi"}, r"appears twice"),
    ({"id": "x", "set": "neutral", "text": "Hi"}, r"missing \['kind'\]"),
])
def test_malformed_prompt_file_is_one_clear_error(tmp_path, bad, message):
    path = write_lines(tmp_path / "p.jsonl", [*PROMPTS, bad])
    with pytest.raises(CorpusError, match=r"p\.jsonl:5: .*" + message):
        load_compare_prompts(path)


def test_prompt_file_needs_both_sets(tmp_path):
    assert len(load_compare_prompts(write_lines(tmp_path / "ok.jsonl", PROMPTS))) == 4
    with pytest.raises(CorpusError, match="neutral set needs at least 2 prompts, found 1"):
        load_compare_prompts(write_lines(tmp_path / "p.jsonl", PROMPTS[:3]))
    with pytest.raises(CorpusError, match="comparison prompts file not found"):
        load_compare_prompts(tmp_path / "none.jsonl")
