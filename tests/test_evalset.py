"""The out-of-style evaluation set (issue 10): it loads, it is balanced, it names no emotion it
is labelled with, it holds no near duplicates, and it shares no text with the training corpus."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from emolens.concepts.emotions import CORE_EMOTIONS, EMOTIONS, find_emotion_words
from emolens.concepts.evalset import (
    LENGTHS,
    REGISTERS,
    EvalIntensityTemplate,
    length_class,
    load_eval_scenarios,
    load_intensity_templates,
    load_outofstyle,
)
from emolens.corpus import load_corpus
from emolens.corpus.textcheck import NEAR_DUP_JACCARD, count_words, jaccard, shingles
from emolens.errors import CorpusError

#: An eval text may share at most this Jaccard of word 5-gram shingles with a training text.
TRAINING_OVERLAP_MAX = 0.3


@pytest.fixture(scope="module")
def texts():
    return load_outofstyle()


def _all_eval_texts(filled: bool = True) -> list[tuple[str, str]]:
    """(id, text) of every eval text; intensity templates filled with each value, or once."""
    out = [(t.id, t.text) for t in load_outofstyle()]
    out += [(s.id, s.text) for s in load_eval_scenarios()]
    for t in load_intensity_templates():
        if filled:
            out += [(f"{t.id}[{i}]", x) for i, x in enumerate(t.texts())]
        else:
            out.append((t.id, t.template))
    return out


# --------------------------------------------------------------------------------------------
# Counts and balance
# --------------------------------------------------------------------------------------------


def test_forty_emotions_ten_texts_each_core_included(texts):
    per_emotion = Counter(t.emotion for t in texts)
    assert len(per_emotion) >= 40
    assert set(CORE_EMOTIONS) <= set(per_emotion)
    assert min(per_emotion.values()) >= 10, per_emotion
    assert set(per_emotion) <= set(EMOTIONS)


def test_every_register_and_length_present_and_spread(texts):
    registers = Counter(t.register for t in texts)
    assert set(registers) == set(REGISTERS)
    # "spread evenly": no register holds more than 1.25 times the share of another
    assert max(registers.values()) <= 1.25 * min(registers.values()), registers
    lengths = Counter(t.length for t in texts)
    assert set(lengths) == set(LENGTHS)
    assert min(lengths.values()) >= 0.1 * len(texts), lengths
    # every emotion is seen in every register and at more than one length
    by_emotion: dict[str, set[str]] = defaultdict(set)
    lens_by_emotion: dict[str, set[str]] = defaultdict(set)
    for t in texts:
        by_emotion[t.emotion].add(t.register)
        lens_by_emotion[t.emotion].add(t.length)
    assert all(v == set(REGISTERS) for v in by_emotion.values())
    assert all(len(v) >= 2 for v in lens_by_emotion.values())


def test_length_label_matches_word_count(texts):
    wrong = [(t.id, t.length, count_words(t.text)) for t in texts
             if t.length != length_class(count_words(t.text))]
    assert not wrong
    assert min(count_words(t.text) for t in texts) >= 5
    assert max(count_words(t.text) for t in texts) <= 130


def test_scenarios_one_per_core_emotion():
    scenarios = load_eval_scenarios()
    assert sorted(s.emotion for s in scenarios) == sorted(CORE_EMOTIONS)
    assert len({s.id for s in scenarios}) == 12


def test_intensity_templates():
    templates = load_intensity_templates()
    assert len(templates) >= 8
    assert len({t.id for t in templates}) == len(templates)
    for t in templates:
        filled = t.texts()
        assert len(filled) == len(t.values) >= 4
        assert all("{x}" not in x for x in filled)
        assert len(set(filled)) == len(filled)
        assert t.expected_signs()
        assert set(t.rises) | set(t.falls) <= set(CORE_EMOTIONS)


# --------------------------------------------------------------------------------------------
# No leaks
# --------------------------------------------------------------------------------------------


def test_no_text_names_its_emotion(texts):
    assert [t.id for t in texts if find_emotion_words(t.text, [t.emotion])] == []


def test_scenarios_and_templates_name_no_emotion_at_all():
    leaks = [(s.id, [m.matched for m in find_emotion_words(s.text)])
             for s in load_eval_scenarios() if find_emotion_words(s.text)]
    leaks += [(t.id, [m.matched for m in find_emotion_words(t.template)])
              for t in load_intensity_templates() if find_emotion_words(t.template)]
    assert leaks == []


def test_other_emotion_words_are_sparse(texts):
    # other emotion words may appear, but sparingly: in at most 5% of the texts
    with_any = [t.id for t in texts if find_emotion_words(t.text)]
    assert len(with_any) <= 0.05 * len(texts), with_any


# --------------------------------------------------------------------------------------------
# Near duplicates, within the set and against the training corpus
# --------------------------------------------------------------------------------------------


def test_no_near_duplicates_within_the_set():
    # the filled variants of one template differ in one number by design: compare templates
    items = _all_eval_texts(filled=False)
    sh = [shingles(text) for _, text in items]
    close = [(items[i][0], items[j][0], round(jaccard(sh[i], sh[j]), 2))
             for i in range(len(items)) for j in range(i + 1, len(items))
             if jaccard(sh[i], sh[j]) >= NEAR_DUP_JACCARD]
    assert close == []
    assert len({text.lower() for _, text in items}) == len(items)


def test_no_overlap_with_the_training_corpus():
    corpus = load_corpus("default")
    training = [r for r in corpus.records if r.text]
    assert len(corpus.stories(include_flagged=True)) > 1000
    train_sh = [shingles(r.text) for r in training]
    index: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for k, s in enumerate(train_sh):
        for g in s:
            index[g].append(k)
    worst: list[tuple[str, str, float]] = []
    for ident, text in _all_eval_texts():
        s = shingles(text)
        shared = Counter(k for g in s for k in index.get(g, ()))
        best = max((jaccard(s, train_sh[k]) for k in shared), default=0.0)
        # report ids only, so that a failure does not print training text
        if best >= TRAINING_OVERLAP_MAX:
            k = max(shared, key=lambda k: jaccard(s, train_sh[k]))
            worst.append((ident, training[k].id, round(best, 2)))
    assert worst == []


# --------------------------------------------------------------------------------------------
# Malformed files: one clear CorpusError line
# --------------------------------------------------------------------------------------------

_GOOD = {"id": "oos.x.01", "emotion": "calm", "register": "diary", "length": "short",
         "text": "Rain on the roof, nowhere to be."}


def _write(tmp_path: Path, rows: list[object], raw: str = "") -> Path:
    p = tmp_path / "f.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows) + raw, encoding="utf-8")
    return p


@pytest.mark.parametrize("rows, raw, expect", [
    ([{**_GOOD, "emotion": "calmish"}], "", "unknown emotion 'calmish'"),
    ([{**_GOOD, "text": "She was calm."}], "", "names its labelled emotion"),
    ([_GOOD, _GOOD], "", "appears twice"),
    ([{**_GOOD, "register": "poem"}], "", "unknown register 'poem'"),
    ([{**_GOOD, "length": "tiny"}], "", "unknown length 'tiny'"),
    ([{**_GOOD, "text": "  "}], "", "text must be a non-empty string"),
    ([{k: v for k, v in _GOOD.items() if k != "text"}], "", "missing ['text']"),
    ([], "{not json\n", "not valid JSON"),
    ([], "", "no out-of-style texts"),
])
def test_malformed_outofstyle(tmp_path, rows, raw, expect):
    p = _write(tmp_path, rows, raw)
    with pytest.raises(CorpusError) as info:
        load_outofstyle(p)
    msg = str(info.value)
    assert expect in msg and "\n" not in msg and str(p) in msg


def test_missing_file_is_a_corpus_error(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        load_eval_scenarios(tmp_path / "absent.jsonl")


_T = {"id": "intensity.x", "template": "I waited {x} hours.", "values": [1, 2, 4],
      "rises": ["afraid"], "falls": ["calm"]}


@pytest.mark.parametrize("row, expect", [
    ({**_T, "template": "I waited hours."}, "exactly one '{x}'"),
    ({**_T, "values": [1, 2]}, "at least 3 numbers"),
    ({**_T, "values": [1, "2", 3]}, "finite numbers"),
    ({**_T, "values": [1, 1, 3]}, "repeat"),
    ({**_T, "rises": ["calm"]}, "both rise and fall"),
    ({**_T, "rises": [], "falls": []}, "both empty"),
    ({**_T, "rises": ["afraidish"]}, "unknown emotion"),
    ({**_T, "template": "I was afraid for {x} hours."}, "names its labelled emotion"),
    ({k: v for k, v in _T.items() if k != "falls"}, "fields must be"),
])
def test_malformed_intensity(tmp_path, row, expect):
    p = _write(tmp_path, [row])
    with pytest.raises(CorpusError) as info:
        load_intensity_templates(p)
    assert expect in str(info.value) and "\n" not in str(info.value)


def test_intensity_formatting():
    t = EvalIntensityTemplate("intensity.t", "It rose {x} cm.", (1, 2.0, 0.5), ("afraid",), ())
    assert t.texts() == ["It rose 1 cm.", "It rose 2 cm.", "It rose 0.5 cm."]
    assert t.expected_signs() == {"afraid": 1}
