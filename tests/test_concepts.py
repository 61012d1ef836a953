"""Tests for emolens.concepts: emotion words, clusters, leak finder, templates, norms, scenarios."""

from __future__ import annotations

import ast
import csv
from collections import Counter
from pathlib import Path

import pytest
from scipy.stats import spearmanr

from emolens import concepts as C
from emolens.concepts import (
    CORE_EMOTIONS,
    EMOTION_CLUSTERS,
    EMOTIONS,
    cluster_of,
    emotion_word_forms,
    find_emotion_words,
    load_norms,
)
from emolens.errors import CorpusError, EmolensError


def matched(text, emotions=None):
    return [(m.emotion, m.matched) for m in find_emotion_words(text, emotions)]


# ------------------------------------------------------------------------------ words, clusters


def test_171_unique_words_and_core():
    assert len(EMOTIONS) == 171 == len(set(EMOTIONS))
    assert list(EMOTIONS) == sorted(EMOTIONS)
    assert {"at ease", "on edge", "worn out", "grief-stricken", "hope", "hopeful"} <= set(EMOTIONS)
    assert len(CORE_EMOTIONS) == 12 and set(CORE_EMOTIONS) <= set(EMOTIONS)


def test_clusters_partition_the_171():
    assert len(EMOTION_CLUSTERS) == 10
    members = [e for ms in EMOTION_CLUSTERS.values() for e in ms]
    assert len(members) == 171 and set(members) == set(EMOTIONS)
    sizes = [len(ms) for ms in EMOTION_CLUSTERS.values()]
    assert sizes == [20, 9, 15, 9, 2, 15, 3, 25, 41, 32]
    names = list(EMOTION_CLUSTERS)
    assert names[0] == "Exuberant Joy" and names[-1] == "Despair and Shame"
    assert cluster_of("vigilant") == "Vigilant Suspicion"
    assert cluster_of("infatuated") == "Despair and Shame"
    with pytest.raises(CorpusError, match="unknown emotion"):
        cluster_of("glad")


# ------------------------------------------------------------------------------ word forms


def test_word_forms_examples():
    assert emotion_word_forms("happy") == ("happy", "happier", "happiest", "happily", "happiness")
    assert "unhappy" not in emotion_word_forms("happy")
    assert emotion_word_forms("hope") == ("hope", "hopes", "hoped", "hoping")
    assert emotion_word_forms("hopeful") == ("hopeful", "hopefully", "hopefulness")
    assert set(emotion_word_forms("angry")) >= {"angry", "angrier", "angrily", "anger", "angered"}
    assert emotion_word_forms("afraid") == ("afraid",)
    assert emotion_word_forms("mad")[:3] == ("mad", "madder", "maddest")
    assert "sadder" in emotion_word_forms("sad") and "smuggest" in emotion_word_forms("smug")
    assert "miserably" in emotion_word_forms("miserable")
    assert "docilely" in emotion_word_forms("docile")
    assert "ecstatically" in emotion_word_forms("ecstatic")
    assert "kindness" in emotion_word_forms("kind")


def test_every_emotion_has_forms_and_no_form_is_shared():
    owner = Counter(f for e in EMOTIONS for f in emotion_word_forms(e))
    assert [f for f, n in owner.items() if n > 1] == []
    for e in EMOTIONS:
        forms = emotion_word_forms(e)
        assert forms[0] == e and len(set(forms)) == len(forms)
        # Each form is found in a sentence, and credited to its own emotion.
        assert matched(f"They said {forms[-1]} twice.") == [(e, forms[-1])]


# ------------------------------------------------------------------------------ leak finder


def test_finder_whole_words_and_case():
    assert matched("She made dinner.", ["mad"]) == []
    assert matched("He was MAD about it.", ["mad"]) == [("mad", "MAD")]
    assert matched("She was hopeful.", ["hope"]) == []
    assert matched("She was hopeful.", ["hopeful"]) == [("hopeful", "hopeful")]
    assert matched("I hoped and hoped.", ["hope"]) == [("hope", "hoped"), ("hope", "hoped")]
    assert matched("A kind man.", ["kind"]) == [("kind", "kind")]
    assert matched("Her kindness showed.", ["kind"]) == [("kind", "kindness")]
    assert matched("Kindergarten opens.") == []
    assert matched("Such unhappiness.") == [("unhappy", "unhappiness")]
    assert matched("She was unhappy.", ["happy"]) == []
    assert matched("the happy-go-lucky kid", ["happy"]) == [("happy", "happy")]
    assert matched("Sadness, sadly, saddened.", ["sad"]) == [
        ("sad", "Sadness"), ("sad", "sadly"), ("sad", "saddened")]


def test_finder_idiom_exclusions():
    assert matched("It was kind of cold. What kind of day!", ["kind"]) == []
    assert matched("It was kind of you.", ["kind"]) == []  # documented false negative
    assert matched("In spite of the rain. Out of spite.", ["spiteful"]) == [("spiteful", "spite")]
    assert matched("He felt ill at ease.", ["at ease"]) == []
    assert matched("He felt at ease.", ["at ease"]) == [("at ease", "at ease")]


def test_finder_multiword_and_hyphen():
    t = "Worn-out and on\nedge, she felt grief stricken, then self confident, at  ease."
    got = matched(t)
    assert got == [("worn out", "Worn-out"), ("on edge", "on\nedge"),
                   ("grief-stricken", "grief stricken"), ("self-confident", "self confident"),
                   ("at ease", "at  ease")]
    for m in find_emotion_words(t):
        assert t[m.start:m.end] == m.matched
    assert matched("a worn coat, on the edge, the grief of it") == []


def test_finder_spans_offsets_and_order():
    t = "Calm. Then ANGER, and a calmer afternoon."
    ms = find_emotion_words(t)
    assert [(m.emotion, m.start, m.end) for m in ms] == [
        ("calm", 0, 4), ("angry", 11, 16), ("calm", 24, 30)]
    assert find_emotion_words(t, []) == []
    assert find_emotion_words(t, ("calm",)) == [ms[0], ms[2]]
    with pytest.raises(EmolensError, match="unknown emotion"):
        find_emotion_words(t, ["glad"])


def test_finder_scans_many_texts():
    text = ("The kettle clicked off and she poured two cups while the rain kept on, "
            "humming the old tune her father liked, and smiled happily at the window. ") * 3
    hits = [find_emotion_words(text) for _ in range(2000)]
    assert all([m.emotion for m in h] == ["happy"] * 3 for h in hits)


# ------------------------------------------------------------------------------ templates


def test_templates_render_and_stay_clean():
    assert C.PROMPT_VERSION == "emolens-prompts-v1"
    p = C.story_prompt("grief-stricken", C.TOPICS[3], "first")
    assert "first-person narration" in p and C.TOPICS[3] in p
    assert p.count("grief-stricken") == 2  # the feeling, and the ban on the word
    assert "third-person" in C.story_prompt("calm", C.TOPICS[0], "third")
    d = C.dialogue_prompt("nervous", "calm", C.TOPICS[1])
    assert "The user is feeling nervous" in d and "assistant is feeling calm" in d
    n = C.neutral_prompt(C.NEUTRAL_TOPIC_HINTS[5])
    assert C.NEUTRAL_TOPIC_HINTS[5] in n and "User:" in n and "Assistant:" in n
    for bad in (lambda: C.story_prompt("glad", "x", "first"),
                lambda: C.story_prompt("calm", "x", "second"),
                lambda: C.dialogue_prompt("calm", "glad", "x")):
        with pytest.raises(CorpusError):
            bad()
    # Apart from the slots, the templates name no emotion.
    for tpl in (C.STORY_TEMPLATE, C.NEUTRAL_TEMPLATE, C.EMOTIONAL_DIALOGUE_TEMPLATE):
        assert find_emotion_words(tpl) == []
    assert 35 <= len(C.NEUTRAL_TOPIC_HINTS) == len(set(C.NEUTRAL_TOPIC_HINTS))
    for hint in C.NEUTRAL_TOPIC_HINTS:
        assert find_emotion_words(hint) == [], hint


# ------------------------------------------------------------------------------ scenarios


def _all_scenario_texts():
    for s in C.IMPLICIT_SCENARIOS:
        yield s.message
    for t in C.INTENSITY_TEMPLATES:
        yield from t.messages()
    for s in C.SPEAKER_PROMPTS:
        yield s.message
    for f in (*C.FEEL_PROMPTS, C.WHAT_HAPPENED_PROMPT):
        yield f.user
        yield f.assistant_prefix


def test_scenarios_name_no_emotion():
    texts = list(_all_scenario_texts())
    assert len(texts) > 60
    for t in texts:
        assert find_emotion_words(t) == [], t


def test_implicit_scenarios_cover_core_emotions():
    assert [s.target for s in C.IMPLICIT_SCENARIOS] == list(CORE_EMOTIONS)
    assert len({s.label for s in C.IMPLICIT_SCENARIOS}) == 12


def test_intensity_templates():
    ts = C.INTENSITY_TEMPLATES
    assert len(ts) == 6 and len({t.name for t in ts}) == 6
    assert sum(len(t.expected) for t in ts) == 24
    for t in ts:
        assert 6 <= len(t.values) <= 9
        assert list(t.values) == sorted(set(t.values))
        assert set(t.expected) == set(C.INTENSITY_EMOTIONS) == {"afraid", "calm", "happy", "sad"}
        assert set(t.expected.values()) <= {-1, 1}
        msgs = t.messages()
        assert len(set(msgs)) == len(msgs) and all("{" not in m for m in msgs)
        assert str(t.values[-1]) in msgs[-1]
        # afraid and calm are expected to move in opposite directions in every template.
        assert t.expected["afraid"] == -t.expected["calm"]
    dose = ts[0]
    assert dose.render(8000) == dose.template.replace("{x}", "8000")
    # Where the study reports trends, the expected signs follow them.
    by = {t.name: t.expected for t in ts}
    assert by["dose"]["afraid"] == 1 and by["dose"]["calm"] == -1
    assert by["relative_age"]["sad"] == -1 and by["pet_missing"]["sad"] == 1
    assert by["students_passed"]["happy"] == 1 and by["money_left"]["afraid"] == -1
    # The sign convention is the one an evaluator computes: a read-out that rises with x.
    rho = spearmanr(dose.values, [0.01 * i for i in range(len(dose.values))])[0]
    assert rho == pytest.approx(1.0) and (rho > 0) == (dose.expected["afraid"] > 0)


def test_speaker_and_feel_prompts():
    sp = C.SPEAKER_PROMPTS
    assert len(sp) == 8 and len({s.label for s in sp}) == 8
    for s in sp:
        assert s.user_emotion in EMOTIONS
        assert s.message.endswith(" What's your take?")
    assert [(f.user, f.assistant_prefix) for f in C.FEEL_PROMPTS] == [
        ("How does he feel?", "He feels"), ("How are you feeling?", "I feel")]


# ------------------------------------------------------------------------------ norms


def _vader_rows():
    import vaderSentiment

    path = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        tok, mean, _sd, raw = line.split("\t")[:4]
        rows[tok] = (float(mean), ast.literal_eval(raw))
    return rows


def test_shipped_norms_match_the_lexicon():
    n = load_norms()
    assert n.valence["happy"] == 2.7 and n.valence["sad"] == -2.1
    assert n.valence["angry"] == -2.3 and n.valence["calm"] == 1.3
    assert n.valence["self-confident"] == 2.5
    vader = _vader_rows()
    for e, v in n.valence.items():
        mean, raw = vader[e]
        assert v == mean and abs(sum(raw) / len(raw) - v) < 0.051
    # Every emotion the lexicon lacks is missing, never guessed; multi-word ones included.
    assert n.missing("valence") == [e for e in EMOTIONS if e not in vader]
    assert {"afraid", "at ease", "on edge", "worn out", "grief-stricken"} <= set(
        n.missing("valence"))
    assert len(n.valence) == 139 and "VADER" in n.valence_source
    # Arousal: all 171, on 1..9, and labelled as the authors' own, not human norms.
    assert n.missing("arousal") == [] and len(n.arousal) == 171
    assert all(1 <= a <= 9 for a in n.arousal.values())
    assert n.arousal_source == C.AUTHOR_SOURCE == "emolens-authors (not human norms)"
    assert n.arousal["panicked"] > n.arousal["nervous"] > n.arousal["calm"] > n.arousal["sleepy"]
    with pytest.raises(CorpusError, match="valence"):
        n.missing("dominance")


def test_shipped_csv_layout():
    with open(C.NORMS_PATH, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["emotion", "valence", "valence_source", "valence_n_raters",
                             "arousal", "arousal_source"]
    assert [r["emotion"] for r in rows] == list(EMOTIONS)
    for r in rows:
        rated = r["valence"] != ""
        assert (r["valence_source"] != "") == rated and (r["valence_n_raters"] == "10") == rated
        assert r["arousal_source"] == "emolens-authors (not human norms)"


def test_user_norms_csv(tmp_path):
    p = tmp_path / "mine.csv"
    p.write_text("Emotion,valence\nhappy,7.5\n  Calm ,\nworn out,3\n\n", encoding="utf-8")
    n = load_norms(p)
    assert n.valence == {"happy": 7.5, "worn out": 3.0}
    assert n.arousal == {} and n.arousal_source == ""
    assert n.valence_source == "user file mine.csv"
    assert len(n.missing("valence")) == 169 and len(n.missing("arousal")) == 171
    q = tmp_path / "a.csv"
    q.write_text("emotion,arousal,arousal_source\nsad,2,lab A\nafraid,8,lab B\n", encoding="utf-8")
    m = load_norms(str(q))
    assert m.arousal == {"sad": 2.0, "afraid": 8.0} and m.arousal_source == "lab A; lab B"


@pytest.mark.parametrize(("content", "message"), [
    ("emotion,valence\nhappy,2\nglad,3\n", r"bad\.csv:3: unknown emotion 'glad'"),
    ("emotion,valence\nhappy,lots\n", r"bad\.csv:2: valence 'lots' is not a number"),
    ("emotion,valence\nhappy,nan\n", r"bad\.csv:2: .*not a finite"),
    ("emotion,valence\nhappy,2\nHappy,3\n", r"bad\.csv:3: emotion 'happy' appears twice"),
    ("emotion,valence\nhappy,2,9\n", r"bad\.csv:2: 3 cells"),
    ("word,valence\nhappy,2\n", r"bad\.csv:1: header has no 'emotion'"),
    ("emotion,dominance\nhappy,2\n", r"bad\.csv:1: header needs a 'valence' or 'arousal'"),
    ("", r"bad\.csv:1: empty file"),
])
def test_bad_norms_csv(tmp_path, content, message):
    p = tmp_path / "bad.csv"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(CorpusError, match=message):
        load_norms(p)


def test_missing_norms_file(tmp_path):
    with pytest.raises(CorpusError, match="norms file not found"):
        load_norms(tmp_path / "nope.csv")
