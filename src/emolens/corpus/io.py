"""Reading corpora: JSONL files and directories, and the curated corpus shipped with emolens.

>>> corpus = load_corpus("default")
>>> corpus.source, corpus.stories()[0].author, corpus.registers()[:3]
('default', 'emolens-curated', ['story', 'narration', 'diary'])
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emolens.concepts.emotions import EMOTIONS
from emolens.concepts.topics import TOPICS, is_held_out_topic
from emolens.corpus.records import REGISTERS, Corpus, Record, render_turns
from emolens.corpus.textcheck import NearDupIndex, dup_group, own_emotions, quality_flags
from emolens.errors import CorpusError

__all__ = [
    "CURATED_AUTHOR",
    "CURATED_PROMPT_VERSION",
    "DIALOGUE_ASKS",
    "DIALOGUE_REGISTERS",
    "VARIANTS",
    "load_corpus",
    "load_curated",
    "read_jsonl",
    "read_records",
]

CURATED_AUTHOR = "emolens-curated"
CURATED_PROMPT_VERSION = "curated-v1"

_DATA_DIR = Path(__file__).resolve().parent.parent / "concepts" / "data"

#: Named variants of the curated corpus: ``load_corpus("default:NAME")``.
VARIANTS: tuple[str, ...] = ("dialogue",)
#: The first-person registers whose texts become the assistant's reply in the dialogue variant.
DIALOGUE_REGISTERS: tuple[str, ...] = ("dialogue", "chat", "diary", "social", "letter")
#: Neutral user messages (this project's own words) that open each chat of the dialogue
#: variant, chosen by a stable hash of the text's id; none names or implies an emotion.
DIALOGUE_ASKS: tuple[str, ...] = (
    "What has been going on with you lately?",
    "Tell me about your day.",
    "What is on your mind right now?",
    "Go ahead, I am listening.",
    "How have things been this week?",
    "What would you like to talk about?",
    "Say whatever comes to mind.",
    "Anything new since we last spoke?",
)


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) from a JSONL file, streaming.

    A torn last line (no newline and not valid JSON: what a kill mid-write leaves) is
    skipped with a warning; a complete last record that only lacks its newline is kept; any
    other bad line (invalid JSON, bytes that are not UTF-8) raises CorpusError naming file
    and line.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.jsonl"
    >>> _ = p.write_text('{"a": 1}\\n\\n{"a": 2}\\n')
    >>> list(read_jsonl(p))
    [(1, {'a': 1}), (3, {'a': 2})]
    """
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed in the finally below
    except FileNotFoundError:
        raise CorpusError(f"{path}: file not found") from None
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        i = 0
        while True:
            try:
                raw = f.readline()  # bytes, decoded line by line: errors name their line
            except OSError as exc:
                raise CorpusError(f"{path}: cannot read ({exc.strerror})") from None
            if not raw:
                return
            i += 1
            try:
                line = raw.decode("utf-8-sig" if i == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise CorpusError(f"{path}:{i}: not UTF-8 text (byte {raw[exc.start]:#04x} at "
                                  f"column {exc.start + 1}); re-encode the file as UTF-8"
                                  ) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                if not line.endswith("\n"):
                    # What a kill mid-write leaves behind; everything before it is intact.
                    warnings.warn(f"{path}:{i}: ignoring torn last line", stacklevel=3)
                    return
                raise CorpusError(f"{path}:{i}: invalid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise CorpusError(f"{path}:{i}: expected a JSON object")
            yield i, obj
    finally:
        f.close()


def read_records(path: str | os.PathLike[str]) -> list[Record]:
    """Every :class:`Record` of one JSONL file; a bad record raises CorpusError with its line.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "n.jsonl"
    >>> _ = p.write_text(Record(id="n/0", kind="neutral", text="hi").to_json() + "\\n")
    >>> [r.id for r in read_records(p)]
    ['n/0']
    """
    out = []
    for i, obj in read_jsonl(path):
        try:
            out.append(Record.from_json(obj))
        except CorpusError as exc:
            raise CorpusError(f"{path}:{i}: {exc}") from None
        except TypeError as exc:
            raise CorpusError(f"{path}:{i}: {exc}") from None
    return out


def load_corpus(path: str | os.PathLike[str]) -> Corpus:
    """Load a corpus directory (or one JSONL file) written by this package, or ``"default"``.

    ``"default"`` is the curated corpus shipped with emolens, converted on the fly (author
    ``emolens-curated``, prompt version ``curated-v1``), with quality flags computed.
    ``"default:dialogue"`` is its dialogue-probe variant (see :func:`load_curated`).

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = Corpus([Record(id="n/0", kind="neutral", text="User: a\\n\\nAssistant: b")]).save(d)
    >>> len(load_corpus(d).neutral())
    1
    """
    name, colon, variant = str(path).partition(":")
    if name == "default":
        if colon and variant not in VARIANTS:
            raise CorpusError(f"unknown variant {variant!r} of the default corpus (known: "
                              + ", ".join(f"default:{v}" for v in VARIANTS) + ")")
        return load_curated(variant=variant or None)
    p = Path(path)
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(p.glob("*.jsonl"))
        if not files:
            raise CorpusError(f"{p}: no .jsonl files in this directory")
    else:
        raise CorpusError(f"{p}: no such corpus directory or file")
    records: list[Record] = []
    for f in files:
        records.extend(read_records(f))
    return Corpus(records, source=str(p))


# --------------------------------------------------------------------------------------------
# The curated corpus
# --------------------------------------------------------------------------------------------


def _require(obj: dict[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise CorpusError(f"{where}: missing key {key!r}")
    val = obj[key]
    if not isinstance(val, types) or isinstance(val, bool):
        raise CorpusError(f"{where}: key {key!r} has the wrong type ({type(val).__name__})")
    return val


def _known(emotion: str, where: str) -> str:
    if emotion not in EMOTIONS:
        raise CorpusError(f"{where}: unknown emotion {emotion!r}")
    return emotion


def _curated_turns(obj: dict[str, Any], where: str) -> list[dict[str, str]]:
    turns = _require(obj, "turns", list, where)
    if not turns:
        raise CorpusError(f"{where}: empty turns")
    out = []
    for t in turns:
        if (not isinstance(t, dict) or t.get("role") not in ("user", "assistant")
                or not isinstance(t.get("content"), str)):
            raise CorpusError(f"{where}: each turn needs role user|assistant and content")
        out.append({"role": t["role"], "content": t["content"]})
    return out


def load_curated(data_dir: str | os.PathLike[str] | None = None,
                 variant: str | None = None) -> Corpus:
    """Convert curated data (``stories/part_*.jsonl``, ``registers/part_*.jsonl``,
    ``neutral_dialogues.jsonl``, ``speaker_dialogues.jsonl``) into a corpus with ids, splits
    and quality flags.

    ``data_dir`` defaults to the data shipped in ``emolens/concepts/data``; this is what
    ``load_corpus("default")`` returns. Its story records are the 60-100-word stories
    (register ``"story"``, ids ``story/EMOTION/tTOPIC/K``) and the register texts (register
    ``narration``, ``diary``, ``dialogue``, ``chat``, ``social`` or ``letter``, ids
    ``story/EMOTION/tTOPIC/REGISTER/K``); K counts the texts of one key in file order. Both
    are split by topic (:func:`~emolens.concepts.topics.is_held_out_topic`), so every
    register has held-out texts.

    ``variant="dialogue"`` (``load_corpus("default:dialogue")``) is the study's dialogue-probe
    variant: its story records are the first-person register texts
    (:data:`DIALOGUE_REGISTERS`), each as a chat whose ``turns`` are a neutral user message
    (:data:`DIALOGUE_ASKS`, chosen by a stable hash of the id) and the text as the
    assistant's reply, under the text's own id; extraction pools them over the reply only.

    >>> len(load_curated().stories()) >= 36 * 171
    True
    >>> chat = load_curated(variant="dialogue").stories()[0]
    >>> [t["role"] for t in chat.turns], chat.register in DIALOGUE_REGISTERS
    (['user', 'assistant'], True)
    """
    if variant is not None and variant not in VARIANTS:
        raise CorpusError(f"unknown corpus variant {variant!r} (known: {', '.join(VARIANTS)})")
    d = Path(data_dir) if data_dir is not None else _DATA_DIR
    story_files = sorted((d / "stories").glob("part_*.jsonl"))
    if not story_files:
        raise CorpusError(f"{d / 'stories'}: no curated story files (part_*.jsonl)")
    n_seen: Counter[tuple[Any, ...]] = Counter()
    records = _curated_stories(story_files, n_seen, register=False)
    records += _curated_stories(sorted((d / "registers").glob("part_*.jsonl")), n_seen,
                                register=True)
    if variant == "dialogue":
        records = [_as_chat(r) for r in records if r.register in DIALOGUE_REGISTERS]
    base = {"author": CURATED_AUTHOR, "prompt_version": CURATED_PROMPT_VERSION}
    neutral_path = d / "neutral_dialogues.jsonl"
    if neutral_path.exists():
        for i, obj in read_jsonl(neutral_path):
            where = f"{neutral_path}:{i}"
            category = _require(obj, "category", str, where)
            system = obj.get("system")
            if system is not None and not isinstance(system, str):
                raise CorpusError(f"{where}: key 'system' must be a string or null")
            turns = _curated_turns(obj, where)
            if system:
                turns = [{"role": "system", "content": system}, *turns]
            k = n_seen[("neutral", category)]
            n_seen[("neutral", category)] += 1
            records.append(Record(
                id=f"neutral/{category}/{k}", kind="neutral", text=render_turns(turns),
                turns=turns, category=category, **base,
            ))
    speaker_path = d / "speaker_dialogues.jsonl"
    if speaker_path.exists():
        for i, obj in read_jsonl(speaker_path):
            where = f"{speaker_path}:{i}"
            user = _known(_require(obj, "user_emotion", str, where), where)
            assistant = _known(_require(obj, "assistant_emotion", str, where), where)
            turns = _curated_turns(obj, where)
            k = n_seen[("dialogue", user, assistant)]
            n_seen[("dialogue", user, assistant)] += 1
            records.append(Record(
                id=f"dialogue/{user}/{assistant}/{k}", kind="dialogue", text=render_turns(turns),
                turns=turns, user_emotion=user, assistant_emotion=assistant, **base,
            ))
    _flag_all(records)
    return Corpus(records, source="default" + (f":{variant}" if variant else ""),
                  variant=variant)


def _curated_stories(files: list[Path], n_seen: Counter[tuple[Any, ...]], *,
                     register: bool) -> list[Record]:
    """Story records of curated story files (``person`` given) or register files
    (``register`` given; narration is third person, the other registers first person)."""
    out = []
    for f in files:
        for i, obj in read_jsonl(f):
            where = f"{f}:{i}"
            emotion = _known(_require(obj, "emotion", str, where), where)
            topic = _require(obj, "topic", int, where)
            text = _require(obj, "text", str, where)
            if not 0 <= topic < len(TOPICS):
                raise CorpusError(f"{where}: topic {topic} out of range 0..{len(TOPICS) - 1}")
            if register:
                reg = _require(obj, "register", str, where)
                if reg not in REGISTERS[1:]:
                    raise CorpusError(f"{where}: unknown register {reg!r} (known: "
                                      f"{', '.join(REGISTERS[1:])})")
                person, key, part = ("third" if reg == "narration" else "first",
                                     (emotion, topic, reg), f"{reg}/")
            else:
                reg, person, key, part = "story", _require(obj, "person", str, where), \
                    (emotion, topic), ""
            k = n_seen[key]
            n_seen[key] += 1
            out.append(Record(
                id=f"story/{emotion}/t{topic:03d}/{part}{k}", kind="story", emotion=emotion,
                topic=topic, text=text.strip(),
                split="heldout" if is_held_out_topic(topic) else "train",
                author=CURATED_AUTHOR, prompt_version=CURATED_PROMPT_VERSION,
                person=person, register=reg,
            ))
    return out


def _as_chat(r: Record) -> Record:
    """A story record as the assistant's reply to a neutral user message (dialogue variant)."""
    ask = DIALOGUE_ASKS[zlib.crc32(r.id.encode("utf-8")) % len(DIALOGUE_ASKS)]
    turns = [{"role": "user", "content": ask}, {"role": "assistant", "content": r.text}]
    return dataclasses.replace(r, text=render_turns(turns), turns=turns)


def _flag_all(records: list[Record]) -> None:
    """Compute write-time flags for records that have none (the curated corpus)."""
    index = NearDupIndex()
    for r in records:
        flags = quality_flags(r.text, emotions=own_emotions(r), kind=r.kind, finished=True,
                              turns=r.turns)
        if index.is_near_duplicate(dup_group(r), r.text):
            flags.append("near_duplicate")
        r.flags = flags
