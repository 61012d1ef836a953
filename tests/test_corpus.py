"""Tests for emolens.corpus: records, loading, resumable generation, flags, checks, CLI."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from emolens import corpus as C
from emolens.concepts.emotions import EMOTIONS
from emolens.concepts.topics import TOPICS, is_held_out_topic
from emolens.corpus import Corpus, Record, check_corpus, corpus_stats, generate_corpus, load_corpus
from emolens.corpus.io import load_curated
from emolens.corpus.textcheck import NearDupIndex
from emolens.errors import CorpusError, EmolensError

# A vocabulary of emotion-free words, for texts whose 5-gram shingles never collide.
_VOCAB = (
    "kettle", "harbour", "lantern", "pebble", "ladder", "orchard", "window", "gravel", "ribbon",
    "parcel", "meadow", "bucket", "candle", "thimble", "saddle", "hammer", "blanket", "compass",
    "pillow", "stable", "basket", "mirror", "garden", "barrel", "cottage", "feather", "lemon",
    "marble", "napkin", "oyster", "pepper", "quarry", "rafter", "spindle", "tunnel", "velvet",
    "walnut", "yarrow", "zinc", "anchor", "bramble", "cobble", "dowel", "ember", "fennel",
    "gable", "hazel", "inlet", "juniper", "kestrel", "lichen", "mallow", "nettle", "olive",
    "plank", "quill", "rowan", "sorrel", "trellis", "umber", "vessel", "willow",
)


def _text(seed: str, n_words: int = 30) -> str:
    rng = random.Random(seed)
    words = [rng.choice(_VOCAB) for _ in range(n_words)]
    return "The " + " ".join(words) + "."


class FakeLM:
    """Stands in for LanguageModel.generate_text; can crash after N batches (a simulated kill)."""

    name = "fake-lm"

    def __init__(self, fail_after: int | None = None, reply=None) -> None:
        self.fail_after = fail_after
        self.calls: list[dict] = []
        self.reply = reply or (lambda prompt: _text(prompt))

    def generate_text(self, messages_batch, *, max_new_tokens, temperature, top_p, seed):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls.append({"batch": messages_batch, "max_new_tokens": max_new_tokens,
                           "temperature": temperature, "top_p": top_p, "seed": seed})
        out = []
        for msgs in messages_batch:
            text, finished = self.reply(msgs[-1]["content"]), True
            if isinstance(text, tuple):
                text, finished = text
            out.append(SimpleNamespace(text=text, n_tokens=len(text.split()), finished=finished))
        return out


def _lines(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


# ------------------------------------------------------------------------------ records


def test_record_round_trip_keeps_every_field():
    r = Record(
        id="dialogue/afraid/t007/1", kind="dialogue", text="User: a\n\nAssistant: b",
        topic=7, turns=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        user_emotion="afraid", assistant_emotion="calm", split="heldout", author="m",
        prompt_version="p1", seed=42, sampling={"temperature": 0.8, "top_p": 0.95},
        flags=["truncated"], person=None, category="x",
    )
    line = r.to_json()
    assert "\n" not in line
    back = Record.from_json(line)
    assert back == r
    assert Record.from_json(json.loads(line)) == r


@pytest.mark.parametrize("line, msg", [
    ("{not json", "invalid JSON"),
    ('{"id": "a", "kind": "story"}', "text"),
    ('{"id": "a", "kind": "poem", "text": "x"}', "kind"),
    ('{"id": "a", "kind": "neutral", "text": "x", "colour": 1}', "colour"),
    ('{"id": "a", "kind": "story", "text": "x"}', "emotion"),
    ('{"id": "a", "kind": "neutral", "text": "x", "split": "test"}', "split"),
    ("[1, 2]", "object"),
])
def test_record_from_json_rejects_malformed(line, msg):
    with pytest.raises(CorpusError, match=msg):
        Record.from_json(line)


def test_render_and_parse_dialogue():
    turns = C.parse_dialogue("Sure, here you go:\n\nPerson: Where is the key?\nUnder the mat?"
                             "\n\n**AI:** It is on the hook.\n\nHuman: Thanks.")
    assert turns == [
        {"role": "user", "content": "Where is the key?\nUnder the mat?"},
        {"role": "assistant", "content": "It is on the hook."},
        {"role": "user", "content": "Thanks."},
    ]
    assert C.render_turns(turns[:2]) == (
        "User: Where is the key?\nUnder the mat?\n\nAssistant: It is on the hook.")
    with_sys = C.parse_dialogue("Answer briefly.\n\nUser: 2+2?\n\nAssistant: 4.", keep_system=True)
    assert with_sys[0] == {"role": "system", "content": "Answer briefly."}
    assert len(with_sys) == 3


# ------------------------------------------------------------------------------ corpus views


def _story(i: int, emotion: str, topic: int, text: str | None = None, **kw) -> Record:
    return Record(id=f"story/{emotion}/t{topic:03d}/{i}", kind="story", emotion=emotion,
                  topic=topic, text=text if text is not None else _text(f"{emotion}{topic}{i}"),
                  split="heldout" if is_held_out_topic(topic) else "train", **kw)


def test_corpus_views_and_fingerprint():
    recs = [_story(0, "sad", 0), _story(0, "afraid", 3), _story(0, "calm", 1, flags=["empty"]),
            Record(id="n/0", kind="neutral", text="User: x\n\nAssistant: y"),
            Record(id="d/0", kind="dialogue", text="User: x", user_emotion="sad",
                   assistant_emotion="calm")]
    c = Corpus(recs)
    assert [r.id for r in c.stories()] == ["story/sad/t000/0", "story/afraid/t003/0"]
    assert [r.emotion for r in c.stories(split="heldout")] == ["afraid"]
    assert len(c.stories(include_flagged=True)) == 3
    assert [r.emotion for r in c.stories(emotions=["calm"], include_flagged=True)] == ["calm"]
    assert c.emotions() == ["afraid", "calm", "sad"]  # the study's order, not file order
    assert len(c.neutral()) == 1 and len(c.dialogues()) == 1
    fp = c.fingerprint()
    assert len(fp) == 64 and fp == Corpus(list(reversed(recs))).fingerprint()
    recs[0].text += " Again."
    assert Corpus(recs).fingerprint() != fp
    with pytest.raises(CorpusError, match="split"):
        c.stories(split="test")
    with pytest.raises(CorpusError, match="duplicate record id"):
        Corpus([recs[0], recs[0]])


# ------------------------------------------------------------------------------ loading


def test_load_directory_round_trip_and_errors(tmp_path):
    recs = [_story(0, "sad", 0), Record(id="n/0", kind="neutral", text="User: a")]
    paths = Corpus(recs).save(tmp_path)
    assert sorted(p.name for p in paths) == ["neutral.jsonl", "stories.jsonl"]
    loaded = load_corpus(tmp_path)
    assert loaded.fingerprint() == Corpus(recs).fingerprint()
    assert [r.id for r in load_corpus(tmp_path / "stories.jsonl")] == ["story/sad/t000/0"]

    with pytest.raises(CorpusError, match="no such corpus"):
        load_corpus(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CorpusError, match="no .jsonl"):
        load_corpus(empty)

    # A bad line in the middle is an error naming file and line.
    bad = tmp_path / "bad"
    bad.mkdir()
    good = Record(id="n/1", kind="neutral", text="x").to_json()
    (bad / "neutral.jsonl").write_text(f"{good}\n{{oops\n{good}\n")
    with pytest.raises(CorpusError, match=r"neutral\.jsonl:2"):
        load_corpus(bad)
    (bad / "neutral.jsonl").write_text(f'{good}\n{{"id": "n/2", "kind": "x", "text": ""}}\n')
    with pytest.raises(CorpusError, match=r"neutral\.jsonl:2: .*kind"):
        load_corpus(bad)


def test_torn_last_line_is_ignored_with_warning(tmp_path):
    good = Record(id="n/1", kind="neutral", text="x").to_json()
    (tmp_path / "neutral.jsonl").write_text(good + "\n" + good[: len(good) // 2])
    with pytest.warns(UserWarning, match="torn last line"):
        c = load_corpus(tmp_path)
    assert [r.id for r in c] == ["n/1"]


def test_load_default_shape():
    c = load_corpus("default")
    assert c.source == "default"
    stories = c.stories(include_flagged=True)
    assert len(stories) >= 12
    assert len({r.id for r in c}) == len(c)
    for r in stories:
        assert r.author == C.CURATED_AUTHOR and r.prompt_version == C.CURATED_PROMPT_VERSION
        assert r.emotion in EMOTIONS
        assert 0 <= r.topic < len(TOPICS)
        assert r.split == ("heldout" if is_held_out_topic(r.topic) else "train")
        assert r.person in ("first", "third")
        assert r.id.startswith(f"story/{r.emotion}/t{r.topic:03d}/")
    for r in c.neutral(include_flagged=True) + c.dialogues(include_flagged=True):
        assert r.turns and r.text == C.render_turns(r.turns)
        assert r.turns[-1]["role"] in ("user", "assistant")
    # Loading twice gives the same corpus.
    assert load_corpus("default").fingerprint() == c.fingerprint()


def test_curated_conversion_on_crafted_data(tmp_path):
    long = "She folded the letter twice and set it under the clock, then went out to the shed."
    (tmp_path / "stories").mkdir()
    rows = [
        {"emotion": "calm", "topic": 3, "person": "first", "text": long},
        {"emotion": "calm", "topic": 3, "person": "third",
         "text": "Calm as ever, he swept the yard and stacked the crates by the gate at noon."},
        {"emotion": "sad", "topic": 4, "person": "third", "text": long.replace("She", "He")},
    ]
    (tmp_path / "stories" / "part_1.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows))
    neutral = {"category": "code", "system": "Be brief.",
               "turns": [{"role": "user", "content": "2+2?"},
                         {"role": "assistant", "content": "4"}]}
    (tmp_path / "neutral_dialogues.jsonl").write_text(json.dumps(neutral) + "\n")
    c = load_curated(tmp_path)
    assert [r.id for r in c] == ["story/calm/t003/0", "story/calm/t003/1", "story/sad/t004/0",
                                 "neutral/code/0"]
    calm0, calm1, sad, n = c.records
    assert calm0.split == "heldout" and sad.split == "train"
    assert (calm0.person, calm1.person) == ("first", "third")
    assert calm0.flags == [] and calm1.flags == ["names_emotion"]
    assert sad.flags == []  # same words as calm0 but another emotion: no near-duplicate
    assert n.turns[0] == {"role": "system", "content": "Be brief."}
    assert n.text == "System: Be brief.\n\nUser: 2+2?\n\nAssistant: 4"
    assert n.flags == ["empty"]
    assert [r.id for r in c.stories()] == ["story/calm/t003/0", "story/sad/t004/0"]

    rows.append({"emotion": "glum-ish", "topic": 1, "person": "first", "text": long})
    (tmp_path / "stories" / "part_1.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(CorpusError, match=r"part_1\.jsonl:4: unknown emotion 'glum-ish'"):
        load_curated(tmp_path)
    rows[-1] = {"emotion": "sad", "topic": 100, "person": "first", "text": long}
    (tmp_path / "stories" / "part_1.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(CorpusError, match=r"part_1\.jsonl:4: topic 100"):
        load_curated(tmp_path)


def test_shipped_corpus_is_complete():
    """Fails until the curated data is complete: 171 emotions x 12 stories, clean, 200 neutral."""
    c = load_corpus("default")
    chk = check_corpus(c, min_per_emotion=12)
    assert len(chk.emotions_ok) == 171, chk.summary()
    assert chk.leaks == [], chk.summary()
    assert chk.exact_duplicates == [] and chk.near_duplicates == [], chk.summary()
    assert chk.empty == [] and chk.truncated == [], chk.summary()
    assert chk.n_neutral >= 200
    assert chk.ok


# ------------------------------------------------------------------------------ cleaning, flags


@pytest.mark.parametrize("raw, clean", [
    ("Here is a story:\n\nShe waited by the door.", "She waited by the door."),
    ("Sure! Here's a short story about a letter.\n\n**The Letter**\n\nHe read it twice.",
     "He read it twice."),
    ("[story 1]\n\nThe bus was late again.", "The bus was late again."),
    ("# Night Shift\nThe ward was quiet.", "The ward was quiet."),
    ('"The rain kept on."', "The rain kept on."),
    ('"Go," she said. "Now."', '"Go," she said. "Now."'),  # inner quotes: leave alone
    ("The rain kept on.\n\nI hope you enjoyed this story!", "The rain kept on."),
    ("Plain text stays.", "Plain text stays."),
    ("Okay, so the bus was late.\nThen it rained.", "Okay, so the bus was late.\nThen it rained."),
    ("Sure!\nThe Long Wait:\nShe sat down.", "She sat down."),
    ("Person: Hello There\n\nAI: Hi.", "Person: Hello There\n\nAI: Hi."),
])
def test_clean_generated_text(raw, clean):
    assert C.clean_generated_text(raw) == clean


def test_shingles_and_jaccard_known_values():
    a = C.shingles("one two three four five six")  # 2 shingles of 5 words
    b = C.shingles("one two three four five seven")
    assert len(a) == 2 and len(b) == 2
    assert C.jaccard(a, b) == pytest.approx(1 / 3)  # 1 shared of 3 distinct
    assert C.shingles("Short text") == frozenset([("short", "text")])
    assert C.jaccard(set(), set()) == 0.0


def test_near_duplicate_index_matches_brute_force():
    rng = random.Random(0)
    texts = [_text(f"base{i}", 40) for i in range(150)]
    for i in range(0, 150, 3):  # copies with a few words swapped: Jaccard from ~0.5 to ~0.9
        words = texts[i].split()
        for _ in range(rng.randint(1, 4)):
            words[rng.randrange(1, len(words) - 1)] = rng.choice(_VOCAB)
        texts.append(" ".join(words))
    index = NearDupIndex()
    n_found = 0
    for n, t in enumerate(texts):
        key, jac = index.add("g", t, key=n)
        sh = C.shingles(t)
        scores = [C.jaccard(sh, C.shingles(u)) for u in texts[:n]]
        best = max(scores, default=0.0)
        if best >= C.NEAR_DUP_JACCARD:  # every real near duplicate is found, scored exactly
            assert jac == pytest.approx(best) and scores[key] == pytest.approx(best)
            n_found += 1
        else:
            assert jac < C.NEAR_DUP_JACCARD
    assert n_found == 20  # of the 50 copies, 20 reach the threshold (the rest change too much)
    # Groups do not see each other.
    assert index.add("other", texts[0])[0] is None


def test_quality_flags_on_crafted_texts():
    long_ok = ("Her hands shook as she opened the envelope, and she read the first line "
               "three times before the words made any sense at all.")
    assert C.quality_flags(long_ok, ["afraid"]) == []
    assert C.quality_flags("She was afraid of what the letter said, and she read it twice "
                           "before folding it away into the drawer.", ["afraid"]) \
        == ["names_emotion"]
    assert C.quality_flags("Too short to count.", ["afraid"]) == ["empty"]
    assert C.quality_flags(long_ok, ["afraid"], finished=False) == ["truncated"]
    assert C.quality_flags(long_ok[:-1] + " and then", ["afraid"]) == ["truncated"]
    assert C.quality_flags(long_ok + '"', ["afraid"]) == []  # closing quote after the stop
    # Dialogues need both speakers; an answer may end without a full stop (a code block).
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    code = "User: Print it in Python, please, with a short example of the call.\n\n" \
           "Assistant: Use print.\n```python\nprint(x)\n```"
    assert C.quality_flags(code, None, kind="neutral", turns=turns) == []
    assert C.quality_flags(code, None, kind="neutral", turns=turns[:1]) == ["malformed"]
    assert C.quality_flags(code, None, kind="neutral", turns=turns, finished=False) \
        == ["truncated"]


# ------------------------------------------------------------------------------ generation


def _expected_story_ids(emotions, topics, per_topic=1):
    return {f"story/{e}/t{t:03d}/{k}" for e in emotions for t in topics for k in range(per_topic)}


def test_generate_records_carry_provenance(tmp_path):
    from emolens import concepts

    lm = FakeLM()
    s = generate_corpus(lm, tmp_path, emotions=["calm", "afraid"], topics=[2, 3], per_topic=2,
                        batch_size=3, seed=7, temperature=0.5, top_p=0.9, max_new_tokens=99,
                        progress=False)
    assert (s.total, s.skipped, s.generated, s.n_batches) == (8, 0, 8, 3)
    assert s.flagged == {} and s.n_flagged == 0
    call = lm.calls[0]
    assert (call["max_new_tokens"], call["temperature"], call["top_p"]) == (99, 0.5, 0.9)
    assert call["batch"][0][0]["role"] == "user" and len(call["batch"]) == 3
    recs = load_corpus(tmp_path).records
    assert {r.id for r in recs} == _expected_story_ids(["calm", "afraid"], [2, 3], 2)
    for r in recs:
        assert r.author == "fake-lm" and r.prompt_version == concepts.PROMPT_VERSION
        assert r.sampling == {"temperature": 0.5, "top_p": 0.9, "max_new_tokens": 99}
        assert isinstance(r.seed, int) and r.flags == []
        assert r.split == ("heldout" if r.topic == 3 else "train")
        k = int(r.id.rsplit("/", 1)[1])
        assert r.person == ("first" if (r.topic + k) % 2 == 0 else "third")
    # k-major order: every emotion and topic gets its first story before any second one.
    assert [r.id.rsplit("/", 1)[1] for r in recs] == ["0"] * 4 + ["1"] * 4


def test_generation_resumes_after_kill_and_torn_line(tmp_path):
    emotions, topics = ["calm", "afraid", "sad"], [0, 1, 2, 3]
    expected = _expected_story_ids(emotions, topics)
    with pytest.raises(KeyboardInterrupt):
        generate_corpus(FakeLM(fail_after=2), tmp_path, emotions=emotions, topics=topics,
                        batch_size=5, progress=False)
    path = tmp_path / "stories.jsonl"
    first = _lines(path)
    assert len(first) == 10  # two batches of five survived the kill
    # A kill in the middle of the next write leaves half a line.
    torn = Record(id="story/sad/t003/0", kind="story", emotion="sad", topic=3,
                  text="half").to_json()
    with open(path, "a") as f:
        f.write(torn[:25])
    with pytest.warns(UserWarning, match="torn"):
        s = generate_corpus(FakeLM(), tmp_path, emotions=emotions, topics=topics,
                            batch_size=5, progress=False)
    assert (s.total, s.skipped, s.generated) == (12, 10, 2)
    final = _lines(path)
    ids = [r["id"] for r in final]
    assert len(ids) == len(set(ids)) == 12
    assert set(ids) == expected
    assert final[:10] == first  # nothing rewritten
    assert path.read_text().endswith("\n")
    # A third run has nothing left to do.
    s = generate_corpus(FakeLM(), tmp_path, emotions=emotions, topics=topics, progress=False)
    assert (s.skipped, s.generated, s.n_batches) == (12, 0, 0)
    assert len(_lines(path)) == 12


def test_generation_keeps_a_complete_last_record_that_lacks_its_newline(tmp_path):
    emotions, topics = ["calm", "sad"], [0, 1]
    generate_corpus(FakeLM(), tmp_path, emotions=emotions, topics=topics, batch_size=3,
                    progress=False)
    path = tmp_path / "stories.jsonl"
    full = path.read_text()
    lines = full.splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1].rstrip("\n"))  # only the newline is lost
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is torn: no warning
        s = generate_corpus(FakeLM(), tmp_path, emotions=emotions, topics=topics,
                            progress=False)
    assert (s.skipped, s.generated) == (4, 0)
    assert path.read_text() == full  # the record is kept and its newline restored


def test_generation_flags_crafted_outputs(tmp_path):
    dup = _text("same story", 40)
    replies = {
        0: "Here is a story:\n\n" + _text("t0", 40),  # clean once the preamble goes
        1: "She was calm and still as the kettle " + _text("t1", 30)[4:],  # names_emotion
        2: "Too short.",  # empty
        3: (_text("t3", 40), False),  # hit max_new_tokens
        4: dup,
        5: dup.replace("The", "A", 1),  # near duplicate of topic 4's story
    }

    def reply(prompt):
        t = next(i for i, topic in enumerate(TOPICS[:6]) if topic in prompt)
        return replies[t]

    s = generate_corpus(FakeLM(reply=reply), tmp_path, emotions=["calm"], topics=6,
                        batch_size=4, progress=False)
    flags = {r.topic: r.flags for r in load_corpus(tmp_path).records}
    assert flags == {0: [], 1: ["names_emotion"], 2: ["empty"], 3: ["truncated"], 4: [],
                     5: ["near_duplicate"]}
    assert s.flagged == {"names_emotion": 1, "empty": 1, "truncated": 1, "near_duplicate": 1}
    assert s.n_flagged == 4
    texts = {r.topic: r.text for r in load_corpus(tmp_path).records}
    assert not texts[0].startswith("Here is")
    assert [r.topic for r in load_corpus(tmp_path).stories()] == [0, 4]


def test_generation_dialogues_and_neutral(tmp_path):
    from emolens import concepts

    def reply(prompt):
        return (f"Person: {_text(prompt + 'u', 12)}\n\nAI: {_text(prompt + 'a', 12)}\n\n"
                f"Person: {_text(prompt + 'v', 12)}\n\nAI: {_text(prompt + 'b', 12)}")

    emotions = ["calm", "afraid", "sad", "proud"]
    generate_corpus(FakeLM(reply=reply), tmp_path, kind="dialogues", emotions=emotions,
                    topics=[5, 7], seed=3, progress=False)
    first = {r.id: r for r in load_corpus(tmp_path).dialogues()}
    assert set(first) == {f"dialogue/{e}/t{t:03d}/0" for e in emotions for t in (5, 7)}
    for r in first.values():
        assert r.user_emotion in emotions and r.assistant_emotion in emotions
        assert [t["role"] for t in r.turns] == ["user", "assistant"] * 2
        assert r.text == C.render_turns(r.turns)
        assert r.split == ("heldout" if r.topic == 7 else "train")
    # Pairs are drawn from a key-seeded RNG: a fresh run with the same seed draws the same ones.
    other = tmp_path / "again"
    generate_corpus(FakeLM(reply=reply), other, kind="dialogues", emotions=emotions,
                    topics=[5, 7], seed=3, progress=False)
    again = {r.id: r.assistant_emotion for r in load_corpus(other)}
    assert again == {i: r.assistant_emotion for i, r in first.items()}

    calls = iter(range(1000))  # same prompt for every k: vary the reply like sampling would

    def neutral_reply(prompt):
        n = next(calls)
        return f"Keep answers short.\n\nUser: {_text(f'{prompt}{n}', 10)}\n\n" \
            f"Assistant: {_text(f'{prompt}{n}x', 20)}"

    n_hints = min(2, len(concepts.NEUTRAL_TOPIC_HINTS))
    s = generate_corpus(FakeLM(reply=neutral_reply), tmp_path, kind="neutral", topics=n_hints,
                        per_topic=2, progress=False)
    assert s.generated == 2 * n_hints
    neutral = load_corpus(tmp_path / "neutral.jsonl").neutral()
    assert len(neutral) == 2 * n_hints
    assert neutral[0].turns[0] == {"role": "system", "content": "Keep answers short."}
    assert neutral[0].category == concepts.NEUTRAL_TOPIC_HINTS[0]


def test_generation_rejects_bad_arguments_and_mixed_authors(tmp_path):
    lm = FakeLM()
    with pytest.raises(CorpusError, match="unknown emotion"):
        generate_corpus(lm, tmp_path, emotions=["glad-ish"], progress=False)
    with pytest.raises(CorpusError, match="kind"):
        generate_corpus(lm, tmp_path, kind="poems", progress=False)
    with pytest.raises(CorpusError, match="topic"):
        generate_corpus(lm, tmp_path, emotions=["calm"], topics=[100], progress=False)
    with pytest.raises(CorpusError, match="1..100"):
        generate_corpus(lm, tmp_path, emotions=["calm"], topics=0, progress=False)
    generate_corpus(lm, tmp_path, emotions=["calm"], topics=1, progress=False)
    other = FakeLM()
    other.name = "another-model"
    with pytest.raises(CorpusError, match="another output directory"):
        generate_corpus(other, tmp_path, emotions=["calm"], topics=2, progress=False)


def test_an_output_path_that_is_a_file_is_a_clean_error(tmp_path):
    blocker = tmp_path / "corpus"
    blocker.write_text("not a folder")
    with pytest.raises(EmolensError, match="not one"):
        generate_corpus(FakeLM(), blocker, emotions=["calm"], topics=1, progress=False)
    with pytest.raises(EmolensError, match="not one"):
        Corpus([_story(0, "calm", 0)]).save(blocker)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "stories.jsonl").mkdir()  # the log itself is a folder
    with pytest.raises(EmolensError, match="it is a directory"):
        generate_corpus(FakeLM(), tmp_path / "d", emotions=["calm"], topics=1, progress=False)
    assert blocker.read_text() == "not a folder"


# ------------------------------------------------------------------------------ check and stats


def _crafted_corpus() -> Corpus:
    recs = []
    for e in ("calm", "sad"):
        for t in range(3):
            recs.append(_story(0, e, t))
    recs.append(_story(0, "afraid", 0))  # only one story
    recs.append(_story(1, "afraid", 0, text="He was afraid of the dark hallway and would not "
                                               "step into it without a lantern lit."))
    recs.append(_story(0, "afraid", 1, text=recs[0].text))  # exact copy of a calm story
    recs.append(_story(0, "afraid", 2, text="Too short."))
    near = recs[2].text.replace("The", "A", 1)
    recs.append(_story(1, "calm", 5, text=near))
    recs.append(Record(id="n/0", kind="neutral",
                       text="User: What is the boiling point of water at sea level?\n\n"
                            "Assistant: One hundred degrees Celsius at standard pressure.",
                       turns=[{"role": "user", "content": "q"},
                              {"role": "assistant", "content": "a"}]))
    return Corpus(recs)


def test_check_corpus_counts_and_problems():
    c = _crafted_corpus()
    chk = check_corpus(c, min_per_emotion=3, emotions=["calm", "sad", "afraid", "proud"])
    assert chk.counts == {"calm": 4, "sad": 3, "afraid": 4, "proud": 0}
    assert chk.emotions_ok == ["calm", "sad", "afraid"]
    assert chk.emotions_short == {"proud": 0}
    assert [leak["id"] for leak in chk.leaks] == ["story/afraid/t000/1"]
    assert chk.leaks[0]["matched"] == ["afraid"]
    assert chk.exact_duplicates == [["story/calm/t000/0", "story/afraid/t001/0"]]
    assert [(d["id"], d["other"]) for d in chk.near_duplicates] == [
        ("story/calm/t005/1", "story/calm/t002/0")]
    assert chk.near_duplicates[0]["jaccard"] >= 0.6
    assert chk.empty == ["story/afraid/t002/0"]
    assert chk.truncated == []
    assert (chk.n_stories, chk.n_neutral, chk.n_dialogues) == (11, 1, 0)
    assert not chk.ok
    text = chk.summary()
    assert "3/4" in text and "FAILED" in text
    assert json.loads(json.dumps(chk.to_dict()))["ok"] is False

    clean = Corpus([_story(0, "calm", t) for t in range(2)])
    good = check_corpus(clean, min_per_emotion=2, emotions=["calm"])
    assert good.ok and good.summary().endswith("OK")
    # A story of an emotion outside the checked list fails the check.
    assert not check_corpus(clean, min_per_emotion=0, emotions=["sad"]).ok
    odd = Corpus([_story(0, "glum-ish", 0)])
    chk = check_corpus(odd, min_per_emotion=0, emotions=["calm"])
    assert chk.unknown_emotions == ["glum-ish"] and chk.leaks == [] and not chk.ok


def test_corpus_stats_numbers():
    c = _crafted_corpus()
    st = corpus_stats(c)
    assert st["by_kind"] == {"story": 11, "neutral": 1}
    assert st["by_emotion"] == {"afraid": 4, "calm": 4, "sad": 3}
    assert st["by_topic"] == {0: 4, 1: 3, 2: 3, 5: 1}
    assert st["by_split"] == {"train": 11}
    assert st["leak_rate"]["k"] == 1 and st["leak_rate"]["n"] == 11
    lo, hi = st["leak_rate"]["ci95"]
    assert lo < 1 / 11 < hi
    assert st["duplicate_rate"]["k"] == 2 and st["duplicate_rate"]["n"] == 12
    # Story lengths: eight of 31 words, one of 2, one of 16 and one near copy of 31.
    q = st["length_words"]["story"]
    assert (q["min"], q["max"], q["p50"]) == (2.0, 31.0, 31.0)
    json.dumps(st)  # serialisable

    lengths = Corpus([_story(0, "calm", t, text=" ".join(["w"] * n) + ".")
                      for t, n in enumerate([10, 20, 30, 40, 50])])
    q = corpus_stats(lengths)["length_words"]["story"]
    assert (q["p25"], q["p50"], q["mean"]) == (20.0, 30.0, 30.0)


def test_rates_carry_the_wilson_interval():
    recs = [_story(0, "calm", t, flags=["empty"] if t % 2 else []) for t in range(10)]
    r = corpus_stats(Corpus(recs))["flagged_rate"]
    assert (r["k"], r["n"], r["rate"]) == (5, 10, 0.5)
    lo, hi = r["ci95"]
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    empty = corpus_stats(Corpus([]))["leak_rate"]
    assert empty == {"k": 0, "n": 0, "rate": 0.0, "ci95": [0.0, 1.0]}


# ------------------------------------------------------------------------------ CLI


def _run_cli(argv: list[str]) -> int:
    from emolens.cli import main

    return main(argv)


def test_cli_check_and_stats_exit_codes(tmp_path, capsys):
    good = tmp_path / "good"
    Corpus([_story(0, "calm", t) for t in range(2)]).save(good)
    assert _run_cli(["corpus", "check", str(good), "--min-per-emotion", "2",
                     "--emotions", "calm"]) == 0
    assert "OK" in capsys.readouterr().out

    bad = tmp_path / "bad"
    _crafted_corpus().save(bad)
    assert _run_cli(["corpus", "check", str(bad), "--min-per-emotion", "3",
                     "--emotions", "calm,sad,afraid"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "naming their own emotion: 1" in out

    assert _run_cli(["corpus", "check", str(bad), "--json", "--min-per-emotion", "1"]) == 1
    assert json.loads(capsys.readouterr().out)["counts"]["calm"] == 4

    assert _run_cli(["corpus", "stats", str(bad), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["by_kind"] == {"story": 11, "neutral": 1}
    assert _run_cli(["corpus", "stats", str(bad)]) == 0
    assert "leak rate: 1/11" in capsys.readouterr().out

    # A missing corpus is a clean error (exit 2), not a traceback.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _run_cli(["corpus", "check", str(tmp_path / "nope")]) == 2


def test_cli_generate_runs_the_loaded_model(tmp_path, monkeypatch, capsys):
    from emolens.cli import corpus as cli_corpus

    seen = {}

    def fake_load(args):
        seen["model"] = args.model
        return FakeLM()

    monkeypatch.setattr(cli_corpus, "load_model_from_args", fake_load)
    out = tmp_path / "gen"
    argv = ["corpus", "generate", "--model", "tiny", "--out", str(out), "--emotions",
            "calm,sad", "--topics", "2", "--per-topic", "2", "--batch-size", "3",
            "--no-progress"]
    assert _run_cli(argv) == 0
    assert seen["model"] == "tiny"
    assert "wrote 8 (0 already there, 8 in all)" in capsys.readouterr().out
    assert {r.id for r in load_corpus(out)} == _expected_story_ids(["calm", "sad"], [0, 1], 2)
    assert _run_cli(argv) == 0  # rerun: nothing left to do
    assert "wrote 0 (8 already there" in capsys.readouterr().out


# ---- settings recorded with the corpus; resuming with other settings refused --------------
class _IdentifiedLM(FakeLM):
    """A FakeLM with a model fingerprint, as a loaded LanguageModel has."""

    def __init__(self, config_hash: str = "aaaa", **kw) -> None:
        super().__init__(**kw)
        self.config_hash = config_hash

    def fingerprint(self) -> dict:
        return {"name": self.name, "n_layers": 4, "config_hash": self.config_hash}


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_settings_are_recorded_beside_the_corpus(tmp_path):
    from emolens.corpus.generate import settings_path

    generate_corpus(_IdentifiedLM(), tmp_path, emotions=["calm"], topics=2, seed=7,
                    temperature=0.7, top_p=0.9, max_new_tokens=50, batch_size=3,
                    progress=False)
    path = settings_path(tmp_path / "stories.jsonl")
    assert path.name == "stories.settings.json"
    s = json.loads(path.read_text())
    assert (s["kind"], s["author"], s["seed"], s["temperature"], s["top_p"],
            s["max_new_tokens"], s["batch_size"], s["emotions"], s["topics"]) == (
        "story", "fake-lm", 7, 0.7, 0.9, 50, 3, ["calm"], 2)
    assert s["model"]["config_hash"] == "aaaa" and s["prompt_version"]
    assert len(load_corpus(tmp_path)) == 2  # the settings file is not read as a corpus


def test_resume_with_other_settings_is_refused_naming_each(tmp_path):
    from emolens.corpus.generate import check_generation_args

    kw = dict(emotions=["calm"], topics=2, progress=False)
    with pytest.raises(KeyboardInterrupt):
        generate_corpus(_IdentifiedLM(fail_after=1), tmp_path, batch_size=1, **kw)
    before = _tree(tmp_path)
    for changed, message in [
        (dict(temperature=0.5), "temperature 0.8 there, 0.5 now"),
        (dict(top_p=0.5, max_new_tokens=10), "top_p 0.95 there, 0.5 now; max_new_tokens 220 "
                                             "there, 10 now"),
        (dict(seed=1), "seed 0 there, 1 now"),
    ]:
        with pytest.raises(CorpusError, match=message) as info:
            generate_corpus(_IdentifiedLM(), tmp_path, **kw, **changed)
        assert "another output directory" in str(info.value)
        with pytest.raises(CorpusError, match=message):  # also before a model is loaded
            check_generation_args(emotions=["calm"], topics=2, **changed, out_dir=tmp_path)
    with pytest.raises(CorpusError, match=r"model fake-lm \(config aaaa\) there, fake-lm "
                                          r"\(config bbbb\) now"):
        generate_corpus(_IdentifiedLM("bbbb"), tmp_path, **kw)
    assert _tree(tmp_path) == before  # a refused run changes no file
    # the batch size and the work list may change: out of memory, go on smaller; add more
    s = generate_corpus(_IdentifiedLM(), tmp_path, batch_size=5, **kw)
    assert (s.skipped, s.generated) == (1, 1)
    s = generate_corpus(_IdentifiedLM(), tmp_path, emotions=["calm", "sad"], topics=2,
                        progress=False)
    assert (s.skipped, s.generated) == (2, 2)


def test_files_from_before_settings_are_checked_against_their_records(tmp_path):
    generate_corpus(FakeLM(), tmp_path, emotions=["calm"], topics=1, progress=False)
    (tmp_path / "stories.settings.json").unlink()  # as written by emolens <= 0.1
    with pytest.raises(CorpusError, match="temperature 0.8 there, 0.3 now"):
        generate_corpus(FakeLM(), tmp_path, emotions=["calm"], topics=1, temperature=0.3,
                        progress=False)
    other = FakeLM()
    other.name = "other-lm"
    with pytest.raises(CorpusError, match="author 'fake-lm' there, 'other-lm' now"):
        generate_corpus(other, tmp_path, emotions=["calm"], topics=1, progress=False)
    (tmp_path / "stories.settings.json").write_text("{broken")
    with pytest.raises(CorpusError, match="cannot read the corpus settings"):
        generate_corpus(FakeLM(), tmp_path, emotions=["calm"], topics=1, progress=False)


@pytest.mark.parametrize("bad, message", [
    (dict(max_new_tokens=0), "max_new_tokens must be a whole number >= 1"),
    (dict(temperature=-1.0), "temperature must be a finite number >= 0"),
    (dict(temperature=float("nan")), "temperature must be a finite number"),
    (dict(top_p=5.0), r"top_p must be a number in \(0, 1\]"),
    (dict(top_p=0.0), r"top_p must be a number in \(0, 1\]"),
    (dict(batch_size=0), "batch_size must be a whole number >= 1"),
    (dict(per_topic=0), "per_topic must be a whole number >= 1"),
    (dict(seed=-1), "seed must be a whole number >= 0"),
    (dict(topics=500), "the number of topics must be in 1..100"),
    (dict(emotions=["nosuch"]), "unknown emotion"),
])
def test_generation_arguments_are_refused_before_anything_is_written(tmp_path, bad, message):
    out = tmp_path / "never"
    lm = FakeLM()
    with pytest.raises(CorpusError, match=message):
        generate_corpus(lm, out, **{"emotions": ["calm"], "topics": 1, **bad}, progress=False)
    assert not out.exists() and lm.calls == []


def test_check_refuses_unknown_emotions_and_negative_minimum():
    c = Corpus([_story(0, "calm", 0)])
    with pytest.raises(CorpusError, match="unknown emotion.*'nosuch'"):
        check_corpus(c, emotions=["calm", "nosuch"])
    with pytest.raises(CorpusError, match="min_per_emotion"):
        check_corpus(c, min_per_emotion=-1, emotions=["calm"])
    with pytest.raises(CorpusError, match="no emotions"):
        check_corpus(c, emotions=[])


def test_a_bad_byte_is_reported_on_its_own_line(tmp_path):
    good = _story(0, "calm", 0).to_json()
    p = tmp_path / "c.jsonl"
    p.write_bytes((good + "\n").encode() * 40 + b'{"id": "x\xe9"}\n')
    with pytest.raises(CorpusError, match=r"c.jsonl:41: not UTF-8 text \(byte 0xe9"):
        C.read_records(p)
    p.write_bytes(b"\xef\xbb\xbf" + (good + "\n").encode())  # a BOM is fine
    assert len(C.read_records(p)) == 1
