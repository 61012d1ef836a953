"""The activities of the preference experiment (study section 8), in this project's own words.

64 activities, 8 in each of the study's 8 categories (:data:`CATEGORIES`), ship as
``data/activities.jsonl``: one JSON object a line with ``id``, ``category`` and ``text``.
Each ``text`` is a verb phrase that completes both prompts of the experiment:

* the pairwise choice, :func:`choice_prompt`: "Would you prefer to (A) {a} or (B) {b}?",
  sent as the user turn, the reply prefilled with :data:`CHOICE_PREFILL` ("("), the preference
  read from the logits of "A" and "B" at that position;
* the probe read-out, :func:`feel_prompt`: "How would you feel about {text}?", the probes
  averaged over the activity's own characters (:func:`feel_span` and
  :func:`choice_spans` give them).

No text contains a form of the 171 emotion words, so a probe read on an activity's tokens
measures what the model makes of the activity, not an emotion word it was handed (a test
checks this with :func:`emolens.concepts.find_emotion_words`).

>>> acts = load_activities()
>>> len(acts), acts[0].category, acts[0].id
(64, 'Helpful', 'helpful.explain_vaccines')
>>> choice_prompt(acts[0].text, acts[-1].text)[:60]
'Would you prefer to (A) walk a curious beginner through how '
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from emolens.errors import CorpusError

__all__ = [
    "ACTIVITIES_PATH",
    "CATEGORIES",
    "CHOICE_PREFILL",
    "CHOICE_TEMPLATE",
    "FEEL_TEMPLATE",
    "Activity",
    "activities_by_category",
    "choice_prompt",
    "choice_spans",
    "feel_prompt",
    "feel_span",
    "load_activities",
]

#: The shipped activities.
ACTIVITIES_PATH = Path(__file__).resolve().parent / "data" / "activities.jsonl"

#: The study's eight categories, in the order the shipped file lists them.
CATEGORIES: tuple[str, ...] = (
    "Helpful", "Engaging", "Social", "Self-curiosity",
    "Neutral", "Aversive", "Misaligned", "Unsafe",
)

#: The pairwise question, sent as the user turn.
CHOICE_TEMPLATE = "Would you prefer to (A) {a} or (B) {b}?"
#: The start of the assistant's reply; the next token's "A" / "B" logits are the choice.
CHOICE_PREFILL = "("
#: The probe read-out question, sent as the user turn.
FEEL_TEMPLATE = "How would you feel about {activity}?"

_ID = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
_MAX_TEXT = 120


class Activity(NamedTuple):
    """One activity: a stable ``id``, one of :data:`CATEGORIES`, and its verb-phrase ``text``."""

    id: str
    category: str
    text: str


def choice_prompt(a: str, b: str) -> str:
    """The user turn that asks the model to choose between activity texts ``a`` and ``b``.

    >>> choice_prompt("sort a list", "write a poem")
    'Would you prefer to (A) sort a list or (B) write a poem?'
    """
    return CHOICE_TEMPLATE.format(a=a, b=b)


def feel_prompt(text: str) -> str:
    """The user turn of the probe read-out for one activity text.

    >>> feel_prompt("sort a list")
    'How would you feel about sort a list?'
    """
    return FEEL_TEMPLATE.format(activity=text)


def choice_spans(a: str, b: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Character spans ``[start, end)`` of option A and option B in :func:`choice_prompt`.

    The steering test adds a vector only on the steered activity's tokens; map these spans
    through the tokenizer's offsets to get them. They come from the template, not from a
    search, so they stay right when one option's text contains the other's.

    >>> p = choice_prompt("nap", "nap in the sun")
    >>> (sa, ea), (sb, eb) = choice_spans("nap", "nap in the sun")
    >>> p[sa:ea], p[sb:eb]
    ('nap', 'nap in the sun')
    """
    head, _, rest = CHOICE_TEMPLATE.partition("{a}")
    middle = rest.partition("{b}")[0]
    sa = len(head)
    sb = sa + len(a) + len(middle)
    return (sa, sa + len(a)), (sb, sb + len(b))


def feel_span(text: str) -> tuple[int, int]:
    """Character span ``[start, end)`` of the activity in :func:`feel_prompt`, the tokens the
    probe read-out averages over.

    >>> s, e = feel_span("sort a list")
    >>> feel_prompt("sort a list")[s:e]
    'sort a list'
    """
    start = len(FEEL_TEMPLATE.partition("{activity}")[0])
    return start, start + len(text)


def activities_by_category(activities: Iterable[Activity]) -> dict[str, list[Activity]]:
    """Group activities by category, categories in :data:`CATEGORIES` order (empty ones left out).

    >>> {c: len(v) for c, v in activities_by_category(load_activities()).items()}["Unsafe"]
    8
    """
    groups: dict[str, list[Activity]] = {c: [] for c in CATEGORIES}
    for a in activities:
        groups.setdefault(a.category, []).append(a)
    return {c: v for c, v in groups.items() if v}


def read_jsonl_objects(path: Path, what: str) -> list[tuple[str, dict[str, Any]]]:
    """Read a JSONL file of objects as ``(where, object)`` pairs, ``where`` being ``file:line``.

    Blank lines are skipped. A missing or unreadable file, a line that is not JSON or not an
    object, raises :class:`CorpusError` with one line naming file and line. Shared by the
    loaders of this package's small JSONL data files.

    >>> rows = read_jsonl_objects(ACTIVITIES_PATH, "activities")
    >>> rows[0][0].endswith("activities.jsonl:1"), sorted(rows[0][1])
    (True, ['category', 'id', 'text'])
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise CorpusError(f"{what} file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusError(f"{path}: cannot read as UTF-8 text ({exc})") from None
    out: list[tuple[str, dict[str, Any]]] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise CorpusError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        out.append((where, obj))
    if not out:
        raise CorpusError(f"{path}: no {what} in the file")
    return out


def string_fields(where: str, obj: dict[str, Any], fields: tuple[str, ...]) -> list[str]:
    """The values of exactly ``fields`` in ``obj``, each a non-empty single-line string.

    >>> string_fields("x:1", {"id": "a", "text": "b"}, ("id", "text"))
    ['a', 'b']
    """
    keys = set(obj)
    if keys != set(fields):
        missing = sorted(set(fields) - keys)
        extra = sorted(keys - set(fields))
        detail = "; ".join(s for s in (f"missing {missing}" if missing else "",
                                       f"unexpected {extra}" if extra else "") if s)
        raise CorpusError(f"{where}: fields must be {list(fields)} ({detail})")
    values = []
    for k in fields:
        v = obj[k]
        if not isinstance(v, str) or not v.strip():
            raise CorpusError(f"{where}: {k} must be a non-empty string, got {v!r}")
        if v != v.strip() or "\n" in v or "\r" in v:
            raise CorpusError(f"{where}: {k} {v!r} has outer spaces or a line break")
        values.append(v)
    return values


def check_id(where: str, ident: str, seen: set[str]) -> None:
    """Raise unless ``ident`` is a lower-case dotted identifier not in ``seen`` (then add it).

    >>> check_id("x:1", "helpful.fix_crash", set())
    """
    if not _ID.match(ident):
        raise CorpusError(f"{where}: id {ident!r} must be lower-case letters, digits, '_' "
                          f"and '.'")
    if ident in seen:
        raise CorpusError(f"{where}: id {ident!r} appears twice")
    seen.add(ident)


def _check_text(where: str, text: str) -> None:
    if len(text) > _MAX_TEXT:
        raise CorpusError(f"{where}: text is {len(text)} characters, at most {_MAX_TEXT}")
    if not text[0].islower():
        raise CorpusError(f"{where}: text {text!r} must start with a lower-case verb "
                          f"(it follows 'Would you prefer to')")
    if text[-1] in ".?!;:,":
        raise CorpusError(f"{where}: text {text!r} must not end in punctuation")
    if any(mark in text for mark in ("(A)", "(B)", "?")):
        raise CorpusError(f"{where}: text {text!r} must not contain '?', '(A)' or '(B)'")


def load_activities(path: str | Path | None = None) -> tuple[Activity, ...]:
    """Read activities from a JSONL file (None = the shipped 64), in file order.

    Every line is an object with exactly ``id``, ``category`` and ``text``. Ids are unique
    lower-case dotted names; categories are among :data:`CATEGORIES`; texts are unique
    single-line verb phrases (lower-case start, no final punctuation, no "?", at most 120
    characters) that fit the choice question. At least two activities are needed for a
    preference. Any problem raises :class:`CorpusError` with one line naming file and line.

    >>> [a.text for a in load_activities() if a.id == "neutral.check_typos"]
    ['check an essay for typos and missing commas']
    """
    p = ACTIVITIES_PATH if path is None else Path(path)
    seen_ids: set[str] = set()
    seen_texts: dict[str, str] = {}
    out: list[Activity] = []
    for where, obj in read_jsonl_objects(p, "activities"):
        ident, category, text = string_fields(where, obj, ("id", "category", "text"))
        check_id(where, ident, seen_ids)
        if category not in CATEGORIES:
            raise CorpusError(f"{where}: unknown category {category!r} "
                              f"(one of {', '.join(CATEGORIES)})")
        _check_text(where, text)
        if text.lower() in seen_texts:
            raise CorpusError(f"{where}: text {text!r} repeats {seen_texts[text.lower()]}")
        seen_texts[text.lower()] = ident
        out.append(Activity(ident, category, text))
    if len(out) < 2:
        raise CorpusError(f"{p}: a preference needs at least 2 activities, found {len(out)}")
    return tuple(out)
