"""Pure text checks: cleaning generated text, word counts, shingles, near duplicates, flags.

Nothing here reads or writes files; everything is tested in milliseconds.

>>> quality_flags("She was calm. " * 5, ["calm"])
['names_emotion']
>>> emotion_leaks("He was afraid, so afraid.", ["afraid"])
['afraid']
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from emolens.concepts.emotions import EMOTIONS, find_emotion_words
from emolens.corpus.records import SPEAKER_RE, Record

__all__ = [
    "MIN_WORDS",
    "NEAR_DUP_JACCARD",
    "SHINGLE_N",
    "NearDupIndex",
    "clean_generated_text",
    "count_words",
    "dup_group",
    "emotion_leaks",
    "ends_cleanly",
    "has_final_punctuation",
    "jaccard",
    "normalise_text",
    "own_emotions",
    "quality_flags",
    "shingles",
]

#: Texts with fewer words are flagged ``empty``.
MIN_WORDS = 15
#: Two texts of a group with at least this Jaccard similarity are near duplicates.
NEAR_DUP_JACCARD = 0.6
#: Shingle length in words.
SHINGLE_N = 5

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
_EMOTION_SET = frozenset(EMOTIONS)


# --------------------------------------------------------------------------------------------
# Cleaning and counting
# --------------------------------------------------------------------------------------------


def count_words(text: str) -> int:
    """Number of words (letters/digits with inner apostrophes).

    >>> count_words("It's a dog-eat-dog world.")
    6
    """
    return len(_WORD_RE.findall(text))


def normalise_text(text: str) -> str:
    """Lowercased words joined by single spaces: what exact duplicates are compared on.

    >>> normalise_text("The  Rain, the RAIN!")
    'the rain the rain'
    """
    return " ".join(_WORD_RE.findall(text.lower().replace("’", "'")))


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
        if SPEAKER_RE.match(first):
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


def has_final_punctuation(text: str) -> bool:
    """True when the text ends a sentence (closing quotes/brackets allowed).

    >>> has_final_punctuation('He left. "Bye."'), has_final_punctuation("and then she")
    (True, False)
    """
    return bool(_END_PUNCT_RE.search(text))


def ends_cleanly(text: str, kind: str) -> bool:
    """Whether a text looks complete. Stories must end a sentence; dialogue answers may end
    in a title, a list or a code block, so only the model's own stop signal judges them.

    >>> ends_cleanly("and then she", "story"), ends_cleanly("and then she", "neutral")
    (False, True)
    """
    return kind != "story" or has_final_punctuation(text)


# --------------------------------------------------------------------------------------------
# Near duplicates
# --------------------------------------------------------------------------------------------


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


class NearDupIndex:
    """Incremental near-duplicate search within groups, in bounded memory.

    Each text keeps its shingle hashes as a sorted uint64 array; only its ``sketch`` smallest
    hashes go into an inverted index. Two texts with Jaccard J share one of those with
    probability about ``1 - (1 - J) ** sketch`` (over 0.99998 at J = 0.6), and every
    candidate is then scored exactly, so reported similarities are exact. This keeps a
    205k-story run near-linear instead of comparing every pair of an emotion's stories.

    >>> index = NearDupIndex()
    >>> index.add("g", "one two three four five six", key="a")
    (None, 0.0)
    >>> index.add("g", "one two three four five six", key="b")
    ('a', 1.0)
    >>> index.is_near_duplicate("other group", "one two three four five six")
    False
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


def dup_group(r: Record) -> tuple[Any, ...]:
    """The group within which a record's near duplicates are searched.

    >>> dup_group(Record(id="s", kind="story", emotion="calm", text="x"))
    ('story', 'calm')
    """
    if r.kind == "story":
        return ("story", r.emotion)
    if r.kind == "dialogue":
        return ("dialogue", r.user_emotion)
    return ("neutral",)


# --------------------------------------------------------------------------------------------
# Emotion words and flags
# --------------------------------------------------------------------------------------------


def own_emotions(r: Record) -> list[str] | None:
    """The emotions a record must not name (unknown names are skipped: nothing to match).

    >>> own_emotions(Record(id="d", kind="dialogue", text="x", user_emotion="sad",
    ...                     assistant_emotion="calm"))
    ['calm', 'sad']
    """
    if r.kind == "story":
        own = [r.emotion]
    elif r.kind == "dialogue":
        own = [r.user_emotion, r.assistant_emotion]
    else:
        return None
    return sorted({e for e in own if e in _EMOTION_SET}) or None


def emotion_leaks(text: str, emotions: Sequence[str]) -> list[str]:
    """The words of ``text`` that name one of ``emotions`` (sorted, each once).

    >>> emotion_leaks("Calm as ever, he was calm.", ["calm", "sad"])
    ['Calm', 'calm']
    """
    return sorted({m.matched for m in find_emotion_words(text, list(emotions))})


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
    if emotions and find_emotion_words(text, list(emotions)):
        flags.append("names_emotion")
    if count_words(text) < MIN_WORDS:
        flags.append("empty")
    if not finished or not ends_cleanly(text, kind):
        flags.append("truncated")
    if kind in ("neutral", "dialogue"):
        roles = [t["role"] for t in (turns or []) if t["role"] != "system"]
        if "user" not in roles or "assistant" not in roles:
            flags.append("malformed")
    return flags
