"""The register corpus inside the default corpus, and its dialogue-probe variant."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from emolens.concepts.emotions import EMOTIONS, find_emotion_words
from emolens.concepts.topics import is_held_out_topic
from emolens.corpus import Corpus, Record, check_corpus, corpus_stats, load_corpus
from emolens.corpus.io import DIALOGUE_ASKS, DIALOGUE_REGISTERS, load_curated
from emolens.corpus.records import REGISTERS, render_turns
from emolens.errors import CorpusError


@pytest.fixture(scope="module")
def default():
    return load_corpus("default")


@pytest.fixture(scope="module")
def dialogue():
    return load_corpus("default:dialogue")


def test_default_corpus_holds_36_texts_per_emotion_in_seven_registers(default):
    stories = default.stories(include_flagged=True)
    assert Counter(r.emotion for r in stories) == {e: 36 for e in EMOTIONS}
    assert default.registers() == list(REGISTERS)
    by_reg = Counter(r.register for r in stories)
    assert by_reg == {"story": 12 * 171, **{r: 4 * 171 for r in REGISTERS[1:]}}
    per = Counter((r.emotion, r.register) for r in stories)
    assert all(per[(e, reg)] == (12 if reg == "story" else 4)
               for e in EMOTIONS for reg in REGISTERS)
    assert len({r.id for r in default}) == len(default)
    for r in stories:
        assert r.person == ("third" if r.register == "narration" else
                            r.person if r.register == "story" else "first")
        tail = "" if r.register == "story" else f"{r.register}/"
        assert r.id.startswith(f"story/{r.emotion}/t{r.topic:03d}/{tail}")
        assert r.id.count("/") == (3 if r.register == "story" else 4)


def test_story_ids_are_those_of_before_the_registers(default):
    # the first curated story and its id, as held-out splits and tests knew them
    first = next(r for r in default.records if r.id == "story/afraid/t000/0")
    assert first.register == "story" and first.text.startswith("The envelope was addressed")
    stories_only = [r for r in default.stories(include_flagged=True) if r.register == "story"]
    assert [r.id for r in stories_only] == [r.id for r in default.stories(include_flagged=True)
                                            [:len(stories_only)]]


def test_every_register_is_split_by_topic_like_the_stories(default):
    held = Counter()
    for r in default.stories(include_flagged=True):
        assert r.split == ("heldout" if is_held_out_topic(r.topic) else "train")
        held[r.register] += r.split == "heldout"
    assert set(held) == set(REGISTERS) and min(held.values()) > 100
    st = corpus_stats(default)
    assert st["heldout_by_register"] == dict(held) and list(st["by_register"]) == list(REGISTERS)


def test_default_corpus_passes_its_check(default):
    chk = check_corpus(default, min_per_emotion=36)
    assert chk.ok, chk.summary()
    assert chk.by_register == {"story": 2052, **{r: 684 for r in REGISTERS[1:]}}
    assert "registers: story 2052, narration 684" in chk.summary()


def test_record_register_round_trips_and_old_lines_still_load():
    r = Record(id="story/calm/t001/diary/0", kind="story", emotion="calm", topic=1,
               text="x", register="diary", person="first")
    assert Record.from_json(r.to_json()) == r
    old = {"id": "story/calm/t001/0", "kind": "story", "emotion": "calm", "text": "x"}
    assert Record.from_json(json.dumps(old)).register is None
    with pytest.raises(CorpusError, match="register"):
        Record.from_json({**old, "register": 3})


def test_register_files_are_checked_on_load(tmp_path):
    text = "I left the gate open and the goats were in the lane again by the time I got back."
    (tmp_path / "stories").mkdir()
    (tmp_path / "registers").mkdir()
    (tmp_path / "stories" / "part_1.jsonl").write_text(json.dumps(
        {"emotion": "calm", "topic": 3, "person": "first", "text": text}) + "\n")
    rows = [{"emotion": "calm", "topic": 3, "register": "diary", "text": text},
            {"emotion": "calm", "topic": 3, "register": "diary", "text": text + " Again."}]
    (tmp_path / "registers" / "part_a.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows))
    c = load_curated(tmp_path)
    assert [r.id for r in c] == ["story/calm/t003/0", "story/calm/t003/diary/0",
                                 "story/calm/t003/diary/1"]
    assert [r.register for r in c] == ["story", "diary", "diary"]
    rows[1]["register"] = "sonnet"
    (tmp_path / "registers" / "part_a.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(CorpusError, match=r"part_a\.jsonl:2: unknown register 'sonnet'"):
        load_curated(tmp_path)


def test_dialogue_variant_puts_first_person_texts_in_the_assistants_turn(default, dialogue):
    assert dialogue.source == "default:dialogue" and dialogue.variant == "dialogue"
    stories = dialogue.stories(include_flagged=True)
    assert Counter(r.emotion for r in stories) == {e: 20 for e in EMOTIONS}
    assert dialogue.registers() == [r for r in REGISTERS if r in DIALOGUE_REGISTERS]
    plain = {r.id: r for r in default.stories(include_flagged=True)}
    asks = Counter()
    for r in stories:
        user, reply = r.turns
        assert user["role"] == "user" and reply["role"] == "assistant"
        assert user["content"] in DIALOGUE_ASKS and reply["content"] == plain[r.id].text
        assert r.text == render_turns(r.turns) and r.split == plain[r.id].split
        asks[user["content"]] += 1
    assert set(asks) == set(DIALOGUE_ASKS) and min(asks.values()) > len(stories) / 16
    # the same chats every time; neutral and speaker dialogues are kept for denoising
    again = load_curated(variant="dialogue")
    assert again.fingerprint() == dialogue.fingerprint() != default.fingerprint()
    assert len(dialogue.neutral()) == len(default.neutral())
    assert dialogue.provenance() == {
        "corpus": "default:dialogue", "corpus_variant": "dialogue",
        "corpus_registers": ["diary", "dialogue", "chat", "social", "letter"]}
    assert check_corpus(dialogue, min_per_emotion=20).ok


def test_the_neutral_user_messages_name_no_emotion():
    for ask in DIALOGUE_ASKS:
        assert find_emotion_words(ask, list(EMOTIONS)) == [], ask


def test_unknown_variants_are_refused():
    with pytest.raises(CorpusError, match="default:dialogue"):
        load_corpus("default:poems")
    with pytest.raises(CorpusError, match="unknown corpus variant"):
        load_curated(variant="poems")
    assert Corpus([]).variant is None and Corpus([]).registers() == []
