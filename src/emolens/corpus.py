"""Corpora of stories and dialogues: records, the shipped corpus, resumable generation, checks.

A corpus is a directory of JSONL files, one :class:`Record` per line.  Three kinds of record:

- ``story``: a one-paragraph story conveying one emotion without naming it (the data the
  emotion vectors are extracted from);
- ``neutral``: an emotionless user/assistant dialogue (for confound removal);
- ``dialogue``: a user/assistant dialogue where each speaker feels a given emotion.

``load_corpus("default")`` converts the curated data shipped in ``emolens/concepts/data``;
:func:`generate_corpus` lets a model write its own corpus, append-only and resumable, with
quality flags recorded on every record; :func:`check_corpus` and :func:`corpus_stats` report on
either.

>>> corpus = Corpus([Record(id="story/calm/t000/0", kind="story", emotion="calm", topic=0,
...                         text="She set the kettle on and watched the rain.")])
>>> [r.id for r in corpus.stories()], corpus.emotions()
(['story/calm/t000/0'], ['calm'])
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import sys
import time
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from emolens.concepts.emotions import EMOTIONS
from emolens.concepts.topics import TOPICS, is_held_out_topic
from emolens.errors import CorpusError
from emolens.fileio import write_text_atomic

__all__ = [
    "CURATED_AUTHOR",
    "CURATED_PROMPT_VERSION",
    "FLAGS",
    "KINDS",
    "Corpus",
    "CorpusCheck",
    "GenerationSummary",
    "Record",
    "check_corpus",
    "clean_generated_text",
    "corpus_stats",
    "generate_corpus",
    "jaccard",
    "load_corpus",
    "parse_dialogue",
    "quality_flags",
    "render_turns",
    "shingles",
]

KINDS: tuple[str, ...] = ("story", "neutral", "dialogue")
#: Flags a record can carry; training uses records without any.
FLAGS: tuple[str, ...] = ("names_emotion", "empty", "truncated", "near_duplicate", "malformed")
CURATED_AUTHOR = "emolens-curated"
CURATED_PROMPT_VERSION = "curated-v1"

#: Output file per kind inside a generated corpus directory.
KIND_FILES: dict[str, str] = {
    "story": "stories.jsonl",
    "neutral": "neutral.jsonl",
    "dialogue": "dialogues.jsonl",
}
_KIND_ALIASES = {
    "story": "story", "stories": "story",
    "neutral": "neutral", "neutrals": "neutral",
    "dialogue": "dialogue", "dialogues": "dialogue",
}

MIN_WORDS = 15
NEAR_DUP_JACCARD = 0.6
SHINGLE_N = 5

_DATA_DIR = Path(__file__).resolve().parent / "concepts" / "data"


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass
class Record:
    """One text of a corpus, with where it came from and what is wrong with it.

    >>> r = Record(id="story/sad/t004/1", kind="story", emotion="sad", topic=4, text="Rain.")
    >>> Record.from_json(r.to_json()) == r
    True
    """

    id: str
    kind: str
    text: str
    emotion: str | None = None
    topic: int | None = None
    turns: list[dict[str, str]] | None = None
    user_emotion: str | None = None
    assistant_emotion: str | None = None
    split: str = "train"
    author: str = ""
    prompt_version: str = ""
    seed: int | None = None
    sampling: dict[str, Any] | None = None
    flags: list[str] = field(default_factory=list)
    #: Narration of a story: "first" or "third" person.
    person: str | None = None
    #: Grouping of a neutral dialogue (its category or topic hint).
    category: str | None = None

    def to_json(self) -> str:
        """One JSON line (no newline), keys in field order."""
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str | dict[str, Any]) -> Record:
        """Parse a line written by :meth:`to_json`; raises CorpusError when malformed."""
        if isinstance(line, str):
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
        else:
            data = line
        if not isinstance(data, dict):
            raise CorpusError(f"expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        missing = [k for k in ("id", "kind", "text") if k not in data]
        if missing:
            raise CorpusError(f"record lacks required key(s) {', '.join(missing)}")
        unknown = sorted(set(data) - known)
        if unknown:
            raise CorpusError(f"record has unknown key(s) {', '.join(unknown)}")
        rec = cls(**data)
        rec._validate()
        return rec

    def _validate(self) -> None:
        def bad(msg: str) -> CorpusError:
            return CorpusError(f"record {self.id!r}: {msg}")

        if not isinstance(self.id, str) or not self.id:
            raise CorpusError("record id must be a non-empty string")
        if self.kind not in KINDS:
            raise bad(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.text, str):
            raise bad("text must be a string")
        if self.split not in ("train", "heldout"):
            raise bad(f"split must be 'train' or 'heldout', got {self.split!r}")
        if self.kind == "story" and not isinstance(self.emotion, str):
            raise bad("a story needs an emotion")
        if self.topic is not None and (isinstance(self.topic, bool)
                                       or not isinstance(self.topic, int)):
            raise bad("topic must be an integer or null")
        if self.turns is not None and (not isinstance(self.turns, list) or not all(
            isinstance(t, dict) and isinstance(t.get("role"), str)
            and isinstance(t.get("content"), str) for t in self.turns
        )):
            raise bad("turns must be a list of {role, content} objects")
        if not isinstance(self.flags, list) or not all(isinstance(f, str) for f in self.flags):
            raise bad("flags must be a list of strings")


def render_turns(turns: Sequence[dict[str, str]]) -> str:
    """Plain rendering of chat turns, one paragraph per turn.

    >>> render_turns([{"role": "user", "content": "Hi."},
    ...               {"role": "assistant", "content": "Hello."}])
    'User: Hi.\\n\\nAssistant: Hello.'
    """
    return "\n\n".join(f"{t['role'].capitalize()}: {t['content'].strip()}" for t in turns)


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------


class Corpus:
    """A list of records with views by kind, split and emotion.

    ``stories()``, ``neutral()`` and ``dialogues()`` leave flagged records out unless asked
    (training uses clean records); ``records`` holds everything.

    >>> c = Corpus([Record(id="a", kind="story", emotion="sad", topic=3, text="x",
    ...                    split="heldout", flags=["empty"])])
    >>> len(c.stories()), len(c.stories(split="heldout", include_flagged=True))
    (0, 1)
    """

    def __init__(self, records: Iterable[Record], source: str = "") -> None:
        self.records: list[Record] = list(records)
        self.source = source
        seen: set[str] = set()
        for r in self.records:
            if r.id in seen:
                raise CorpusError(f"{source or 'corpus'}: duplicate record id {r.id!r}")
            seen.add(r.id)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __repr__(self) -> str:
        counts = Counter(r.kind for r in self.records)
        return f"Corpus({self.source!r}, {dict(counts)})"

    def stories(
        self,
        split: str | None = None,
        emotions: Iterable[str] | None = None,
        include_flagged: bool = False,
    ) -> list[Record]:
        """Story records, optionally one split ("train"/"heldout") and some emotions."""
        if split not in (None, "train", "heldout"):
            raise CorpusError(f"split must be 'train', 'heldout' or None, got {split!r}")
        wanted = None if emotions is None else set(emotions)
        return [
            r for r in self.records
            if r.kind == "story"
            and (split is None or r.split == split)
            and (wanted is None or r.emotion in wanted)
            and (include_flagged or not r.flags)
        ]

    def neutral(self, include_flagged: bool = False) -> list[Record]:
        """Neutral dialogue records."""
        return [r for r in self.records
                if r.kind == "neutral" and (include_flagged or not r.flags)]

    def dialogues(self, include_flagged: bool = False) -> list[Record]:
        """Emotional user/assistant dialogue records."""
        return [r for r in self.records
                if r.kind == "dialogue" and (include_flagged or not r.flags)]

    def emotions(self) -> list[str]:
        """Emotions that have at least one story, in the study's order (unknown ones last)."""
        present = {r.emotion for r in self.records if r.kind == "story" and r.emotion}
        order = {e: i for i, e in enumerate(EMOTIONS)}
        return sorted(present, key=lambda e: (order.get(e, len(order)), e))

    def fingerprint(self) -> str:
        """sha256 over (id, text) of every record, independent of record order.

        >>> a = Record(id="a", kind="neutral", text="x")
        >>> b = Record(id="b", kind="neutral", text="y")
        >>> Corpus([a, b]).fingerprint() == Corpus([b, a]).fingerprint()
        True
        """
        h = hashlib.sha256()
        for r in sorted(self.records, key=lambda r: r.id):
            h.update(r.id.encode("utf-8"))
            h.update(b"\x00")
            h.update(r.text.encode("utf-8"))
            h.update(b"\x01")
        return h.hexdigest()

    def save(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """Write one JSONL file per kind into ``out_dir`` (atomic replace); returns the paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for kind, name in KIND_FILES.items():
            recs = [r for r in self.records if r.kind == kind]
            if not recs:
                continue
            path = out / name
            _atomic_write(path, "".join(r.to_json() + "\n" for r in recs))
            written.append(path)
        return written


def _atomic_write(path: Path, text: str) -> None:
    write_text_atomic(path, text)


# --------------------------------------------------------------------------------------------
# Reading JSONL
# --------------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object), streaming; a torn last line (no newline, bad JSON) is
    skipped with a warning."""
    try:
        f = open(path, encoding="utf-8")  # noqa: SIM115 - closed in the finally below
    except FileNotFoundError:
        raise CorpusError(f"{path}: file not found") from None
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        i = 0
        while True:
            try:
                line = f.readline()
            except UnicodeDecodeError as exc:
                raise CorpusError(f"{path}:{i + 1}: not UTF-8 text ({exc.reason})") from None
            if not line:
                return
            i += 1
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


def _read_records(path: Path) -> list[Record]:
    out = []
    for i, obj in _read_jsonl(path):
        try:
            out.append(Record.from_json(obj))
        except CorpusError as exc:
            raise CorpusError(f"{path}:{i}: {exc}") from None
        except TypeError as exc:
            raise CorpusError(f"{path}:{i}: {exc}") from None
    return out


def load_corpus(path: str | os.PathLike[str]) -> Corpus:
    """Load a corpus directory (or one JSONL file) written by this module, or ``"default"``.

    ``"default"`` is the curated corpus shipped with emolens, converted on the fly (author
    ``emolens-curated``, prompt version ``curated-v1``), with quality flags computed.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = Corpus([Record(id="n/0", kind="neutral", text="User: a\\n\\nAssistant: b")]).save(d)
    >>> len(load_corpus(d).neutral())
    1
    """
    if str(path) == "default":
        return _load_curated()
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
        records.extend(_read_records(f))
    return Corpus(records, source=str(p))


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


def _load_curated(data_dir: Path | None = None) -> Corpus:
    """Convert the shipped curated data into records."""
    d = data_dir or _DATA_DIR
    story_files = sorted((d / "stories").glob("part_*.jsonl"))
    if not story_files:
        raise CorpusError(f"{d / 'stories'}: no curated story files (part_*.jsonl)")
    base = {"author": CURATED_AUTHOR, "prompt_version": CURATED_PROMPT_VERSION}
    records: list[Record] = []
    n_seen: Counter[tuple[Any, ...]] = Counter()
    for f in story_files:
        for i, obj in _read_jsonl(f):
            where = f"{f}:{i}"
            emotion = _known(_require(obj, "emotion", str, where), where)
            topic = _require(obj, "topic", int, where)
            person = _require(obj, "person", str, where)
            text = _require(obj, "text", str, where)
            if not 0 <= topic < len(TOPICS):
                raise CorpusError(f"{where}: topic {topic} out of range 0..{len(TOPICS) - 1}")
            k = n_seen[(emotion, topic)]
            n_seen[(emotion, topic)] += 1
            records.append(Record(
                id=f"story/{emotion}/t{topic:03d}/{k}", kind="story", emotion=emotion,
                topic=topic, text=text.strip(),
                split="heldout" if is_held_out_topic(topic) else "train",
                person=person, **base,
            ))
    neutral_path = d / "neutral_dialogues.jsonl"
    if neutral_path.exists():
        for i, obj in _read_jsonl(neutral_path):
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
        for i, obj in _read_jsonl(speaker_path):
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
    return Corpus(records, source="default")


def _flag_all(records: list[Record]) -> None:
    """Compute write-time flags for records that have none (the curated corpus)."""
    index = _NearDupIndex()
    for r in records:
        flags = quality_flags(r.text, emotions=_own_emotions(r), kind=r.kind, finished=True,
                              turns=r.turns)
        if index.is_near_duplicate(_dup_group(r), r.text):
            flags.append("near_duplicate")
        r.flags = flags


# --------------------------------------------------------------------------------------------
# Text cleaning and quality flags (pure functions)
# --------------------------------------------------------------------------------------------

_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)*")
_PREAMBLE_RE = re.compile(
    r"^\s*(?:(?:sure|certainly|okay|ok|of course|absolutely|alright)\b[!.,]?"
    r"|(?:sure|certainly|okay|ok|of course|absolutely|alright)\b.*"
    r"\b(?:story|stories|dialogue|conversation|paragraph|here)\b.*"
    r"|here(?:'s|’s| is| are)\b.*"
    r"|[\[(]?\s*(?:story|dialogue|paragraph)\s*\d*\s*[\])]?\s*:?)\s*$",
    re.IGNORECASE,
)
_OUTRO_RE = re.compile(
    r"^\s*(?:i hope\b|let me know\b|feel free\b|would you like\b|do you want\b"
    r"|\(?note:|\(?word count)",
    re.IGNORECASE,
)
_TITLE_RE = re.compile(r"^\s*(?:#+\s*.+|\*\*[^*]+\*\*|title\s*:.*|__[^_]+__)\s*$", re.IGNORECASE)
_END_PUNCT_RE = re.compile(r"[.!?…][\"'”’)\]*_]*\s*$")
_QUOTE_PAIRS = {'"': '"', "“": "”", "'": "'", "‘": "’"}


def count_words(text: str) -> int:
    """Number of words (letters/digits with inner apostrophes).

    >>> count_words("It's a dog-eat-dog world.")
    6
    """
    return len(_WORD_RE.findall(text))


def clean_generated_text(text: str) -> str:
    """Strip the wrapper a small model puts round a story: preambles, titles, quotes, outros.

    >>> clean_generated_text('Here is a story:\\n\\n**The Letter**\\n\\n"She opened it slowly."')
    'She opened it slowly.'
    """
    lines = [ln.strip() for ln in text.strip().splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    # Leading junk: preambles ("Here is a story:"), markers ("[story 1]"), titles.
    changed = True
    while changed and lines:
        changed = False
        first = lines[0]
        rest_nonempty = any(ln for ln in lines[1:])
        if _SPEAKER_RE.match(first):
            break  # a dialogue starts here
        short_intro = first.endswith(":") and len(first.split()) <= 12
        if rest_nonempty and (_PREAMBLE_RE.match(first) or _TITLE_RE.match(first)
                              or short_intro or _looks_like_title(first)):
            lines.pop(0)
            while lines and not lines[0]:
                lines.pop(0)
            changed = True
    # Trailing junk: offers to write more, notes, word counts.
    while lines and (not lines[-1] or _OUTRO_RE.match(lines[-1]) or lines[-1] in ("---", "***")):
        if len([ln for ln in lines if ln]) <= 1 and lines[-1]:
            break
        lines.pop()
    out = "\n".join(lines).strip()
    out = re.sub(r"\n{3,}", "\n\n", out)
    # Markdown emphasis the model wraps round the whole text.
    for mark in ("**", "__", "*", "_"):
        if len(out) > 2 * len(mark) and out.startswith(mark) and out.endswith(mark) \
                and out.count(mark) == 2:
            out = out[len(mark):-len(mark)].strip()
    # Quotes wrapped round the whole text (and nowhere else).
    if len(out) >= 2 and out[0] in _QUOTE_PAIRS and out[-1] == _QUOTE_PAIRS[out[0]]:
        inner = out[1:-1]
        if out[0] not in inner and _QUOTE_PAIRS[out[0]] not in inner:
            out = inner.strip()
    return out


def _looks_like_title(line: str) -> bool:
    """A short line without sentence punctuation, in title case or wrapped in markup."""
    words = line.split()
    if not words or len(words) > 8 or _END_PUNCT_RE.search(line) or line.endswith(","):
        return False
    caps = sum(w[0].isupper() for w in words if w[0].isalpha())
    return caps >= max(1, (len(words) + 1) // 2)


def _ends_cleanly(text: str, kind: str) -> bool:
    """Whether a text looks complete. Stories must end a sentence; dialogue answers may end
    in a title, a list or a code block, so only the model's own stop signal judges them."""
    return kind != "story" or has_final_punctuation(text)


def has_final_punctuation(text: str) -> bool:
    """True when the text ends a sentence (closing quotes/brackets allowed).

    >>> has_final_punctuation('He left. "Bye."'), has_final_punctuation("and then she")
    (True, False)
    """
    return bool(_END_PUNCT_RE.search(text))


def shingles(text: str, n: int = SHINGLE_N) -> frozenset[tuple[str, ...]]:
    """Word n-gram shingles of the lowercased text (one shingle if shorter than n words).

    >>> sorted(shingles("A b c", n=2))
    [('a', 'b'), ('b', 'c')]
    """
    words = [w.lower().replace("’", "'") for w in _WORD_RE.findall(text)]
    if not words:
        return frozenset()
    if len(words) < n:
        return frozenset([tuple(words)])
    return frozenset(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset[Any] | set[Any], b: frozenset[Any] | set[Any]) -> float:
    """Jaccard similarity of two sets (0 when both are empty).

    >>> jaccard({1, 2, 3}, {2, 3, 4})
    0.5
    """
    if not a and not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def _shingle_hashes(text: str) -> np.ndarray:
    """Sorted unique 64-bit hashes of the text's shingles (in-memory use only)."""
    hs = {hash(sh) & 0xFFFFFFFFFFFFFFFF for sh in shingles(text)}
    return np.array(sorted(hs), dtype=np.uint64)


class _NearDupIndex:
    """Incremental near-duplicate search within groups, in bounded memory.

    Each text keeps its shingle hashes as a sorted uint64 array; only its ``sketch`` smallest
    hashes go into an inverted index. Two texts with Jaccard J share one of those with
    probability about ``1 - (1 - J) ** sketch`` (over 0.99998 at J = 0.6), and every
    candidate is then scored exactly, so reported similarities are exact. This keeps a
    205k-story run near-linear instead of comparing every pair of an emotion's stories.
    """

    def __init__(self, threshold: float = NEAR_DUP_JACCARD, sketch: int = 12) -> None:
        self.threshold = threshold
        self.sketch = sketch
        self.arrays: dict[Any, list[np.ndarray]] = defaultdict(list)
        self.keys: dict[Any, list[Any]] = defaultdict(list)
        # hash -> index, or list of indices once shared (most hashes belong to one text)
        self.postings: dict[Any, dict[int, Any]] = defaultdict(dict)

    def add(self, group: Any, text: str, key: Any = None) -> tuple[Any, float]:
        """Add a text; return (key, Jaccard) of the most similar earlier text of its group.

        The key is None when no earlier text shares a sketch hash.
        """
        arr = _shingle_hashes(text)
        sketch = arr[: self.sketch].tolist()
        post = self.postings[group]
        arrays = self.arrays[group]
        cands: set[int] = set()
        for h in sketch:
            v = post.get(h)
            if v is None:
                continue
            if isinstance(v, int):
                cands.add(v)
            else:
                cands.update(v)
        best, best_j = -1, 0.0
        for j in sorted(cands):
            other = arrays[j]
            inter = int(np.intersect1d(arr, other, assume_unique=True).size)
            union = arr.size + other.size - inter
            jac = inter / union if union else 0.0
            if jac > best_j:
                best, best_j = j, jac
        idx = len(arrays)
        arrays.append(arr)
        self.keys[group].append(key)
        for h in sketch:
            v = post.get(h)
            if v is None:
                post[h] = idx
            elif isinstance(v, int):
                post[h] = [v, idx]
            else:
                v.append(idx)
        return (self.keys[group][best] if best >= 0 else None), best_j

    def is_near_duplicate(self, group: Any, text: str, key: Any = None) -> bool:
        """Add a text; True if it is a near duplicate of an earlier one in its group."""
        return self.add(group, text, key)[1] >= self.threshold


def _emotion_finder() -> Any:
    # Imported lazily: emolens.concepts may import heavier data on first use.
    from emolens.concepts import find_emotion_words

    return find_emotion_words


def quality_flags(
    text: str,
    emotions: Sequence[str] | None,
    *,
    kind: str = "story",
    finished: bool = True,
    turns: Sequence[dict[str, str]] | None = None,
) -> list[str]:
    """Write-time flags for one cleaned text (near duplicates are checked separately).

    ``emotions`` are the emotions the text must not name (its own; for a neutral dialogue,
    None means none are checked).

    >>> quality_flags("Too short.", emotions=[])
    ['empty']
    """
    flags = []
    if emotions and _emotion_finder()(text, list(emotions)):
        flags.append("names_emotion")
    if count_words(text) < MIN_WORDS:
        flags.append("empty")
    if not finished or not _ends_cleanly(text, kind):
        flags.append("truncated")
    if kind in ("neutral", "dialogue"):
        roles = [t["role"] for t in (turns or []) if t["role"] != "system"]
        if "user" not in roles or "assistant" not in roles:
            flags.append("malformed")
    return flags


_EMOTION_SET = frozenset(EMOTIONS)


def _own_emotions(r: Record) -> list[str] | None:
    """The emotions a record must not name (unknown names are skipped: nothing to match)."""
    if r.kind == "story":
        own = [r.emotion]
    elif r.kind == "dialogue":
        own = [r.user_emotion, r.assistant_emotion]
    else:
        return None
    return sorted({e for e in own if e in _EMOTION_SET}) or None


def _dup_group(r: Record) -> Any:
    if r.kind == "story":
        return ("story", r.emotion)
    if r.kind == "dialogue":
        return ("dialogue", r.user_emotion)
    return ("neutral",)


_SPEAKER_RE = re.compile(
    r"^\s*[*_]*\s*(user|human|person|assistant|ai)\s*[*_]*\s*:\s*[*_]*\s*(.*)$", re.IGNORECASE
)
_ROLE_OF = {"user": "user", "human": "user", "person": "user", "assistant": "assistant",
            "ai": "assistant"}


def parse_dialogue(text: str, keep_system: bool = False) -> list[dict[str, str]]:
    """Split a generated dialogue into chat turns by its speaker labels.

    Text before the first label becomes a system turn when ``keep_system`` (neutral dialogues
    may open with instructions), else it is dropped as wrapper junk.

    >>> parse_dialogue("Person: Hi\\nthere.\\n\\nAI: Hello.")
    [{'role': 'user', 'content': 'Hi\\nthere.'}, {'role': 'assistant', 'content': 'Hello.'}]
    """
    turns: list[dict[str, str]] = []
    preface: list[str] = []
    for line in text.splitlines():
        m = _SPEAKER_RE.match(line)
        if m:
            role = _ROLE_OF[m.group(1).lower()]
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"] += "\n" + m.group(2)
            else:
                turns.append({"role": role, "content": m.group(2)})
        elif turns:
            turns[-1]["content"] += "\n" + line
        else:
            preface.append(line)
    for t in turns:
        t["content"] = re.sub(r"\n{3,}", "\n\n", t["content"]).strip()
    turns = [t for t in turns if t["content"]]
    system = "\n".join(preface).strip()
    if keep_system and system and turns:
        turns.insert(0, {"role": "system", "content": system})
    return turns


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


class _Generation(Protocol):
    text: str
    n_tokens: int
    finished: bool


class TextGenerator(Protocol):
    """What :func:`generate_corpus` needs from a model (``emolens.model.LanguageModel``)."""

    name: str

    def generate_text(
        self,
        messages_batch: list[list[dict[str, str]]],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
    ) -> Sequence[_Generation]: ...


@dataclass
class GenerationSummary:
    """What one :func:`generate_corpus` call did."""

    path: str
    kind: str
    total: int  # work items requested
    skipped: int  # already in the output file
    generated: int  # written by this call
    flagged: dict[str, int]  # flag -> count among the records written by this call
    n_flagged: int  # records written by this call with at least one flag
    n_batches: int
    n_tokens: int  # tokens the model generated in this call
    elapsed_s: float


@dataclass(frozen=True)
class _Item:
    id: str
    kind: str
    prompt: str
    emotion: str | None = None
    topic: int | None = None
    user_emotion: str | None = None
    assistant_emotion: str | None = None
    person: str | None = None
    category: str | None = None


def _resolve_ids(topics: int | Sequence[int] | None, n_all: int, what: str) -> list[int]:
    if topics is None:
        return list(range(n_all))
    if isinstance(topics, int) and not isinstance(topics, bool):
        if not 1 <= topics <= n_all:
            raise CorpusError(f"number of {what} must be in 1..{n_all}, got {topics}")
        return list(range(topics))
    ids = list(topics)
    for t in ids:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < n_all:
            raise CorpusError(f"{what} id {t!r} out of range 0..{n_all - 1}")
    if len(set(ids)) != len(ids):
        raise CorpusError(f"duplicate {what} ids in {ids}")
    return ids


def _resolve_emotions(emotions: Iterable[str] | None) -> list[str]:
    if emotions is None:
        return list(EMOTIONS)
    out = list(emotions)
    unknown = [e for e in out if e not in EMOTIONS]
    if unknown:
        raise CorpusError(f"unknown emotion(s): {', '.join(unknown)}")
    if not out:
        raise CorpusError("no emotions given")
    if len(set(out)) != len(out):
        raise CorpusError("duplicate emotions given")
    return out


def _work_items(
    kind: str, emotions: list[str], topics: int | Sequence[int] | None, per_topic: int, seed: int
) -> list[_Item]:
    """All work items in generation order: k-major, then topic, then emotion.

    That order keeps a partial corpus balanced across emotions and topics.
    """
    from emolens import concepts as c

    items: list[_Item] = []
    if kind == "story":
        tids = _resolve_ids(topics, len(TOPICS), "topic")
        for k in range(per_topic):
            for t in tids:
                for e in emotions:
                    # Alternate by topic and k, so one story per topic still mixes both.
                    person = "first" if (t + k) % 2 == 0 else "third"
                    items.append(_Item(
                        id=f"story/{e}/t{t:03d}/{k}", kind=kind, emotion=e, topic=t,
                        person=person, prompt=c.story_prompt(e, TOPICS[t], person),
                    ))
    elif kind == "neutral":
        hints = list(c.NEUTRAL_TOPIC_HINTS)
        hids = _resolve_ids(topics, len(hints), "neutral topic hint")
        for k in range(per_topic):
            for h in hids:
                items.append(_Item(
                    id=f"neutral/h{h:03d}/{k}", kind=kind, category=hints[h],
                    prompt=c.neutral_prompt(hints[h]),
                ))
    else:
        tids = _resolve_ids(topics, len(TOPICS), "topic")
        for k in range(per_topic):
            for t in tids:
                for e in emotions:
                    # Assistant emotion drawn independently of the user's, as in the study,
                    # but from a key-seeded RNG so a rerun reproduces the same pairs.
                    rng = random.Random(f"{seed}|{e}|{t}|{k}")
                    a = emotions[rng.randrange(len(emotions))]
                    items.append(_Item(
                        id=f"dialogue/{e}/t{t:03d}/{k}", kind=kind, topic=t,
                        user_emotion=e, assistant_emotion=a,
                        prompt=c.dialogue_prompt(e, a, TOPICS[t]),
                    ))
    return items


def _repair_tail(path: Path) -> None:
    """Truncate a torn final line (no trailing newline) so appends start on a fresh line."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Walk back to the last newline; keep everything up to and including it.
        pos, chunk = size, 4096
        cut = 0
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            buf = f.read(pos - start)
            nl = buf.rfind(b"\n")
            if nl >= 0:
                cut = start + nl + 1
                break
            pos = start
        warnings.warn(f"{path}: truncating torn last line ({size - cut} bytes)", stacklevel=3)
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())


def _append(path: Path, records: Sequence[Record]) -> None:
    data = "".join(r.to_json() + "\n" for r in records).encode("utf-8")
    # One write per batch, then fsync: a kill loses at most this batch (possibly torn).
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _batch_seed(seed: int, first_id: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(first_id.encode("utf-8"))) % (2**31 - 1)


def _make_record(
    item: _Item, raw: str, finished: bool, author: str, prompt_version: str, seed: int,
    sampling: dict[str, Any],
) -> Record:
    cleaned = clean_generated_text(raw)
    turns = None
    text = cleaned
    if item.kind in ("neutral", "dialogue"):
        turns = parse_dialogue(cleaned, keep_system=item.kind == "neutral")
        if turns:
            text = render_turns(turns)
    rec = Record(
        id=item.id, kind=item.kind, text=text, emotion=item.emotion, topic=item.topic,
        turns=turns or None, user_emotion=item.user_emotion,
        assistant_emotion=item.assistant_emotion,
        split="heldout" if item.topic is not None and is_held_out_topic(item.topic) else "train",
        author=author, prompt_version=prompt_version, seed=seed, sampling=dict(sampling),
        person=item.person, category=item.category,
    )
    rec.flags = quality_flags(text, _own_emotions(rec), kind=rec.kind, finished=finished,
                              turns=turns)
    return rec


def generate_corpus(
    lm: TextGenerator,
    out_dir: str | os.PathLike[str],
    *,
    kind: str = "stories",
    emotions: Iterable[str] | None = None,
    topics: int | Sequence[int] | None = None,
    per_topic: int = 1,
    batch_size: int = 8,
    seed: int = 0,
    temperature: float = 0.8,
    top_p: float = 0.95,
    max_new_tokens: int = 220,
    progress: bool = True,
) -> GenerationSummary:
    """Let ``lm`` write a corpus into ``out_dir``, append-only and resumable.

    Work items are keyed by record id (kind, emotion, topic, k); items already in the output
    file are skipped, so rerunning the same call after a kill finishes the job. Each batch is
    appended and fsynced; a torn final line is truncated before appending. Every record keeps
    its flags (``names_emotion``, ``empty``, ``truncated``, ``near_duplicate``, and
    ``malformed`` for dialogues without both speakers).

    ``topics`` is a count (the first N topic ids) or a list of ids; for ``kind="neutral"`` it
    indexes ``concepts.NEUTRAL_TOPIC_HINTS`` and ``emotions`` is ignored.

    >>> class Echo:
    ...     name = "echo"
    ...     def generate_text(self, batch, **kw):
    ...         from types import SimpleNamespace as S
    ...         return [S(text="The kettle clicked off and she poured two cups, humming, "
    ...                        "while the rain kept on.", n_tokens=20, finished=True)
    ...                 for _ in batch]
    >>> import tempfile
    >>> s = generate_corpus(Echo(), tempfile.mkdtemp(), emotions=["calm"], topics=2,
    ...                     progress=False)
    >>> s.generated, s.flagged
    (2, {'near_duplicate': 1})
    """
    from emolens import concepts as c

    kind_n = _KIND_ALIASES.get(kind)
    if kind_n is None:
        raise CorpusError(f"kind must be stories, neutral or dialogues, got {kind!r}")
    if per_topic < 1:
        raise CorpusError(f"per_topic must be >= 1, got {per_topic}")
    if batch_size < 1:
        raise CorpusError(f"batch_size must be >= 1, got {batch_size}")
    emo = _resolve_emotions(emotions)
    author = str(getattr(lm, "name", "") or type(lm).__name__)
    prompt_version = str(c.PROMPT_VERSION)
    sampling = {"temperature": float(temperature), "top_p": float(top_p),
                "max_new_tokens": int(max_new_tokens)}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / KIND_FILES[kind_n]
    _repair_tail(path)
    existing = _read_records(path) if path.exists() else []
    for r in existing:
        if r.author != author or r.prompt_version != prompt_version:
            raise CorpusError(
                f"{path} holds records by {r.author!r} (prompt {r.prompt_version!r}); this run "
                f"is {author!r} (prompt {prompt_version!r}): use another output directory"
            )
    done = {r.id for r in existing}
    index = _NearDupIndex()
    for r in existing:
        index.add(_dup_group(r), r.text)

    items = _work_items(kind_n, emo, topics, per_topic, seed)
    todo = [it for it in items if it.id not in done]
    flagged: Counter[str] = Counter()
    n_flagged = n_tokens = n_batches = generated = 0
    t0 = time.perf_counter()
    bar = _progress_bar(len(todo), progress, desc=f"corpus {kind_n}")
    try:
        for b in range(0, len(todo), batch_size):
            batch = todo[b:b + batch_size]
            bseed = _batch_seed(seed, batch[0].id)
            outs = lm.generate_text(
                [[{"role": "user", "content": it.prompt}] for it in batch],
                max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                seed=bseed,
            )
            outs = list(outs)
            if len(outs) != len(batch):
                raise CorpusError(f"model returned {len(outs)} texts for a batch of {len(batch)}")
            recs = []
            for it, o in zip(batch, outs, strict=True):
                rec = _make_record(it, o.text, bool(o.finished), author, prompt_version, bseed,
                                   sampling)
                if index.is_near_duplicate(_dup_group(rec), rec.text):
                    rec.flags.append("near_duplicate")
                flagged.update(rec.flags)
                n_flagged += bool(rec.flags)
                n_tokens += int(o.n_tokens)
                recs.append(rec)
            _append(path, recs)
            generated += len(recs)
            n_batches += 1
            if bar is not None:
                bar.update(len(recs))
                bar.set_postfix(flagged=n_flagged, refresh=False)
    finally:
        if bar is not None:
            bar.close()
    return GenerationSummary(
        path=str(path), kind=kind_n, total=len(items), skipped=len(items) - len(todo),
        generated=generated, flagged=dict(flagged), n_batches=n_batches, n_tokens=n_tokens,
        n_flagged=n_flagged, elapsed_s=time.perf_counter() - t0,
    )


def _progress_bar(total: int, enabled: bool, desc: str) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="text", file=sys.stderr, dynamic_ncols=True)


# --------------------------------------------------------------------------------------------
# Checks and statistics
# --------------------------------------------------------------------------------------------


@dataclass
class CorpusCheck:
    """Result of :func:`check_corpus`; ``ok`` when every requirement holds."""

    min_per_emotion: int
    counts: dict[str, int]  # emotion -> stories (all, flagged included)
    emotions_ok: list[str]
    emotions_short: dict[str, int]  # emotion -> count, for those below the minimum
    unknown_emotions: list[str]  # story emotions not among the checked ones
    leaks: list[dict[str, Any]]  # {"id", "emotion", "matched"}
    exact_duplicates: list[list[str]]  # groups of ids with the same normalised text
    near_duplicates: list[dict[str, Any]]  # {"id", "other", "jaccard"}
    empty: list[str]
    truncated: list[str]
    malformed: list[str]
    n_stories: int
    n_neutral: int
    n_dialogues: int
    n_emotions: int  # how many emotions were required

    @property
    def ok(self) -> bool:
        return not (self.emotions_short or self.unknown_emotions or self.leaks
                    or self.exact_duplicates or self.near_duplicates or self.empty
                    or self.truncated or self.malformed)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def summary(self) -> str:
        """A few readable lines."""
        lines = [
            (f"stories: {self.n_stories}  neutral dialogues: {self.n_neutral}  "
            f"speaker dialogues: {self.n_dialogues}"),
            (f"emotions with >= {self.min_per_emotion} stories: "
            f"{len(self.emotions_ok)}/{self.n_emotions}"),
        ]
        if self.emotions_short:
            short = sorted(self.emotions_short.items(), key=lambda kv: (kv[1], kv[0]))
            shown = ", ".join(f"{e} ({n})" for e, n in short[:10])
            more = f" and {len(short) - 10} more" if len(short) > 10 else ""
            lines.append(f"  short: {shown}{more}")
        if self.unknown_emotions:
            lines.append(f"unknown emotions: {', '.join(self.unknown_emotions[:10])}")
        lines.append(f"texts naming their own emotion: {len(self.leaks)}")
        for leak in self.leaks[:5]:
            lines.append(f"  {leak['id']}: {', '.join(leak['matched'])}")
        lines.append(f"exact duplicate groups: {len(self.exact_duplicates)}  "
                     f"near duplicates: {len(self.near_duplicates)}")
        for nd in self.near_duplicates[:5]:
            lines.append(f"  {nd['id']} ~ {nd['other']} (jaccard {nd['jaccard']:.2f})")
        lines.append(f"empty: {len(self.empty)}  truncated: {len(self.truncated)}  "
                     f"malformed dialogues: {len(self.malformed)}")
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


def _norm_text(text: str) -> str:
    return " ".join(_WORD_RE.findall(text.lower().replace("’", "'")))


def _duplicates(records: Sequence[Record]) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Exact duplicate groups (any kind) and near-duplicate pairs (within a dup group)."""
    by_text: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in records:
        by_text[(r.kind, _norm_text(r.text))].append(r.id)
    exact = [ids for ids in by_text.values() if len(ids) > 1]
    exact_ids = {i for ids in exact for i in ids[1:]}
    index = _NearDupIndex()
    near = []
    for r in records:
        other, jac = index.add(_dup_group(r), r.text, key=r.id)
        if other is not None and jac >= NEAR_DUP_JACCARD and r.id not in exact_ids:
            near.append({"id": r.id, "other": other, "jaccard": round(jac, 4)})
    return exact, near


def check_corpus(
    corpus: Corpus, min_per_emotion: int = 12, emotions: Sequence[str] = EMOTIONS
) -> CorpusCheck:
    """Check a corpus is fit for extraction: enough stories per emotion, no leaks or duplicates.

    Counts include flagged stories; leaks, duplicates, empty and truncated texts are found
    afresh (not read from the flags), so the check also works on hand-edited files.

    >>> c = Corpus([Record(id="s", kind="story", emotion="calm", topic=0,
    ...                    text="She was calm. " * 5)])
    >>> chk = check_corpus(c, min_per_emotion=1, emotions=["calm"])
    >>> chk.ok, len(chk.leaks)
    (False, 1)
    """
    find = _emotion_finder()
    wanted = list(emotions)
    stories = [r for r in corpus.records if r.kind == "story"]
    counts = {e: 0 for e in wanted}
    unknown: set[str] = set()
    for r in stories:
        if r.emotion in counts:
            counts[r.emotion] += 1
        else:
            unknown.add(str(r.emotion))
    leaks = []
    for r in corpus.records:
        own = _own_emotions(r)
        if r.kind == "neutral" or not own:
            continue
        found = find(r.text, own)
        if found:
            matched = sorted({getattr(m, "matched", str(m)) for m in found})
            leaks.append({"id": r.id, "emotion": "/".join(own), "matched": matched})
    exact, near = _duplicates(corpus.records)
    empty = [r.id for r in corpus.records if count_words(r.text) < MIN_WORDS]
    truncated = [r.id for r in corpus.records
                 if "truncated" in r.flags or not _ends_cleanly(r.text, r.kind)]
    malformed = [r.id for r in corpus.records
                 if r.kind in ("neutral", "dialogue")
                 and "malformed" in quality_flags(r.text, None, kind=r.kind, turns=r.turns)]
    return CorpusCheck(
        min_per_emotion=min_per_emotion,
        counts=counts,
        emotions_ok=[e for e in wanted if counts[e] >= min_per_emotion],
        emotions_short={e: n for e, n in counts.items() if n < min_per_emotion},
        unknown_emotions=sorted(unknown),
        leaks=leaks,
        exact_duplicates=exact,
        near_duplicates=near,
        empty=empty,
        truncated=truncated,
        malformed=malformed,
        n_stories=len(stories),
        n_neutral=sum(r.kind == "neutral" for r in corpus.records),
        n_dialogues=sum(r.kind == "dialogue" for r in corpus.records),
        n_emotions=len(wanted),
    )


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score 95% interval for k successes out of n.

    >>> tuple(round(x, 3) for x in _wilson(0, 10))
    (0.0, 0.278)
    """
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def _rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = _wilson(k, n)
    return {"k": k, "n": n, "rate": (k / n) if n else 0.0, "ci95": [round(lo, 6), round(hi, 6)]}


def _percentiles(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {}
    s = sorted(values)

    def q(p: float) -> float:
        # Linear interpolation between order statistics (numpy's default).
        pos = (len(s) - 1) * p
        lo = math.floor(pos)
        hi = min(lo + 1, len(s) - 1)
        return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))

    return {"min": float(s[0]), "p5": q(0.05), "p25": q(0.25), "p50": q(0.5),
            "p75": q(0.75), "p95": q(0.95), "max": float(s[-1]),
            "mean": sum(s) / len(s)}


def corpus_stats(corpus: Corpus) -> dict[str, Any]:
    """Counts and rates describing a corpus (JSON-serialisable).

    Rates come with k, n and a Wilson 95% interval. Lengths are in words.

    >>> st = corpus_stats(Corpus([Record(id="n", kind="neutral", text="User: hi")]))
    >>> st["n_records"], st["by_kind"]
    (1, {'neutral': 1})
    """
    recs = corpus.records
    stories = [r for r in recs if r.kind == "story"]
    find = _emotion_finder()
    n_leak = sum(bool(find(r.text, own)) for r in stories if (own := _own_emotions(r)))
    exact, near = _duplicates(recs)
    dup_ids = {i for ids in exact for i in ids[1:]} | {nd["id"] for nd in near}
    lengths: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        vals = [count_words(r.text) for r in recs if r.kind == kind]
        if vals:
            lengths[kind] = _percentiles(vals)
    order = {e: i for i, e in enumerate(EMOTIONS)}
    by_emotion = Counter(r.emotion for r in stories)
    return {
        "source": corpus.source,
        "fingerprint": corpus.fingerprint(),
        "n_records": len(recs),
        "by_kind": dict(Counter(r.kind for r in recs)),
        "by_emotion": {e: by_emotion[e] for e in sorted(
            by_emotion, key=lambda e: (order.get(str(e), len(order)), str(e)))},
        "n_emotions": len(by_emotion),
        "by_topic": dict(sorted(Counter(r.topic for r in stories
                                        if r.topic is not None).items())),
        "by_split": dict(Counter(r.split for r in stories)),
        "by_person": dict(Counter(r.person for r in stories if r.person)),
        "length_words": lengths,
        "leak_rate": _rate(n_leak, len(stories)),
        "duplicate_rate": _rate(len(dup_ids), len(recs)),
        "flags": dict(Counter(f for r in recs for f in r.flags)),
        "flagged_rate": _rate(sum(bool(r.flags) for r in recs), len(recs)),
        "authors": dict(Counter(r.author for r in recs)),
        "prompt_versions": dict(Counter(r.prompt_version for r in recs)),
    }
