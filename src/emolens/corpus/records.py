"""Corpus records and the in-memory corpus: :class:`Record`, :class:`Corpus`, chat turns.

>>> corpus = Corpus([Record(id="story/calm/t000/0", kind="story", emotion="calm", topic=0,
...                         text="She set the kettle on and watched the rain.")])
>>> [r.id for r in corpus.stories()], corpus.emotions()
(['story/calm/t000/0'], ['calm'])
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from emolens.concepts.emotions import EMOTIONS
from emolens.errors import CorpusError
from emolens.fileio import ensure_dir, write_text_atomic

__all__ = ["FLAGS", "KINDS", "KIND_FILES", "REGISTERS", "Corpus", "Record", "parse_dialogue",
           "render_turns"]

KINDS: tuple[str, ...] = ("story", "neutral", "dialogue")
#: Registers of the curated story texts: the 60-100-word stories, then the register corpus
#: (third-person narration and five first-person registers).
REGISTERS: tuple[str, ...] = ("story", "narration", "diary", "dialogue", "chat", "social",
                              "letter")
#: Flags a record can carry; training uses records without any.
FLAGS: tuple[str, ...] = ("names_emotion", "empty", "truncated", "near_duplicate", "malformed")

#: Output file per kind inside a generated corpus directory.
KIND_FILES: dict[str, str] = {
    "story": "stories.jsonl",
    "neutral": "neutral.jsonl",
    "dialogue": "dialogues.jsonl",
}


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
    #: Register of a story text (see :data:`REGISTERS`); None where not recorded (older files).
    register: str | None = None

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
        if self.register is not None and not isinstance(self.register, str):
            raise bad("register must be a string or null")


class Corpus:
    """A list of records with views by kind, split and emotion.

    ``stories()``, ``neutral()`` and ``dialogues()`` leave flagged records out unless asked
    (training uses clean records); ``records`` holds everything.

    >>> c = Corpus([Record(id="a", kind="story", emotion="sad", topic=3, text="x",
    ...                    split="heldout", flags=["empty"])])
    >>> len(c.stories()), len(c.stories(split="heldout", include_flagged=True))
    (0, 1)
    """

    def __init__(self, records: Iterable[Record], source: str = "",
                 variant: str | None = None) -> None:
        self.records: list[Record] = list(records)
        self.source = source
        #: A named variant of a corpus (``"dialogue"`` for ``load_corpus("default:dialogue")``).
        self.variant = variant
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

    def registers(self) -> list[str]:
        """Registers of the story records, in :data:`REGISTERS` order (unknown ones last).

        >>> Corpus([Record(id="a", kind="story", emotion="sad", text="x", register="diary"),
        ...         Record(id="b", kind="story", emotion="sad", text="y")]).registers()
        ['diary']
        """
        present = {r.register for r in self.records if r.kind == "story" and r.register}
        order = {x: i for i, x in enumerate(REGISTERS)}
        return sorted(present, key=lambda x: (order.get(x, len(order)), x))

    def provenance(self) -> dict[str, Any]:
        """What a vector file records about the corpus it was built from.

        >>> Corpus([], source="default:dialogue", variant="dialogue").provenance()
        {'corpus': 'default:dialogue', 'corpus_variant': 'dialogue', 'corpus_registers': []}
        """
        return {"corpus": self.source, "corpus_variant": self.variant,
                "corpus_registers": self.registers()}

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
        """Write one JSONL file per kind into ``out_dir`` (atomic replace); returns the paths.

        >>> import tempfile
        >>> paths = Corpus([Record(id="n/0", kind="neutral", text="User: hi")]).save(
        ...     tempfile.mkdtemp())
        >>> [p.name for p in paths]
        ['neutral.jsonl']
        """
        out = ensure_dir(out_dir)
        written = []
        for kind, name in KIND_FILES.items():
            recs = [r for r in self.records if r.kind == kind]
            if not recs:
                continue
            path = out / name
            write_text_atomic(path, "".join(r.to_json() + "\n" for r in recs))
            written.append(path)
        return written


# --------------------------------------------------------------------------------------------
# Chat turns
# --------------------------------------------------------------------------------------------


def render_turns(turns: Sequence[dict[str, str]]) -> str:
    """Plain rendering of chat turns, one paragraph per turn.

    >>> render_turns([{"role": "user", "content": "Hi."},
    ...               {"role": "assistant", "content": "Hello."}])
    'User: Hi.\\n\\nAssistant: Hello.'
    """
    return "\n\n".join(f"{t['role'].capitalize()}: {t['content'].strip()}" for t in turns)


#: A speaker label opening a line of a generated dialogue ("User:", "**AI:**", ...).
SPEAKER_RE = re.compile(
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
        m = SPEAKER_RE.match(line)
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
