"""The out-of-style evaluation set: text written apart from the training corpus (issue 10).

Accuracy that matters is accuracy on text the vectors were not built from (DESIGN.md,
"Measured on text written elsewhere"). This module loads three small files from
``data/eval/`` that exist only to measure that:

* ``outofstyle.jsonl``: 400 short texts, 10 for each of 40 emotions (the 12 core emotions and
  28 others chosen across valence, arousal and the study's clusters), each with a
  :data:`REGISTERS` register and a :data:`LENGTHS` length class. Loaded by
  :func:`load_outofstyle`.
* ``scenarios.jsonl``: 12 implicit-emotion messages to an assistant, one per core emotion,
  that name no emotion word at all. Loaded by :func:`load_eval_scenarios`.
* ``intensity.jsonl``: 10 numerical-intensity templates in the spirit of the study's section
  5.4: a sentence with an ``{x}`` slot, the values of ``x`` in order of increasing severity or
  amount, and the emotions expected to rise and to fall along that order. Loaded by
  :func:`load_intensity_templates`.

How the set was written. An AI helper session of this project (a Claude model working as a
sub-agent) wrote every text by hand in one sitting, in the project's own words, with its own
situations. It was told not to open the training stories, the neutral and speaker dialogues,
or the story scenarios and prompt templates, and it did not; it used only the list of the 171
emotions and the leak finder :func:`emolens.concepts.find_emotion_words`. The texts differ from
the training corpus on purpose: seven registers (diary line, line of dialogue, social post,
letter or email, message to an assistant, third-person narration, news-like report), lengths
from 11 to 113 words, and speakers of many ages, countries and trades. No text names its
labelled emotion, and near-synonyms from the 171 were avoided where possible, so a read-out has
to recognise the situation, not the word. The scenarios and intensity situations are fresh,
not the study's examples. Tests check that no eval text shares more than a 0.3 Jaccard of word
5-gram shingles with any training text (stories and dialogues), and that the set holds no near
duplicates.

Caveat, stated plainly: the training corpus may have been written by a model of the same
family, so "apart" means different registers, lengths, situations and authoring process, not a
different author population. Human-written text would be a stronger test.

Rules of use. Nothing here may be used to build vectors, fit a read-out head, or choose layers,
heads, token skips or any hyperparameter; those choices use a split of the training corpus
only. The set is read once, at the end, to report out-of-style accuracy beside the in-style
held-out split (never instead of it).

Every loader validates on load (known emotion names, known register and length, non-empty
single-line text, no form of the labelled emotion in the text, unique ids) and raises
:class:`~emolens.errors.CorpusError` with one line naming file and line for a malformed file.

>>> texts = load_outofstyle()
>>> len(texts), len({t.emotion for t in texts}), texts[0].id
(400, 40, 'oos.happy.01')
>>> sorted({t.register for t in texts}) == sorted(REGISTERS)
True
>>> [s.emotion for s in load_eval_scenarios()][:3]
['happy', 'inspired', 'loving']
>>> t = load_intensity_templates()[0]
>>> print(t.texts()[0])
The river behind our house has risen 2 centimetres since this morning and it is still raining.
>>> t.expected_signs()
{'afraid': 1, 'calm': -1}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emolens.concepts.activities import check_id, read_jsonl_objects, string_fields
from emolens.concepts.emotions import EMOTIONS, find_emotion_words
from emolens.errors import CorpusError

__all__ = [
    "EVAL_DIR",
    "INTENSITY_PATH",
    "LENGTHS",
    "LONG_MIN_WORDS",
    "OUTOFSTYLE_PATH",
    "REGISTERS",
    "SCENARIOS_PATH",
    "SHORT_MAX_WORDS",
    "EvalIntensityTemplate",
    "EvalScenario",
    "EvalText",
    "length_class",
    "load_eval_scenarios",
    "load_intensity_templates",
    "load_outofstyle",
]

#: Folder of the shipped evaluation files.
EVAL_DIR = Path(__file__).resolve().parent / "data" / "eval"
#: The out-of-style texts.
OUTOFSTYLE_PATH = EVAL_DIR / "outofstyle.jsonl"
#: The implicit-emotion scenarios.
SCENARIOS_PATH = EVAL_DIR / "scenarios.jsonl"
#: The numerical-intensity templates.
INTENSITY_PATH = EVAL_DIR / "intensity.jsonl"

#: Registers of the out-of-style texts: a first-person diary line, a line of dialogue, a short
#: social-media post, a letter or email, a user's message to an AI assistant, third-person
#: narration, and a news-like or report-like sentence.
REGISTERS: tuple[str, ...] = (
    "diary", "dialogue", "social", "letter", "assistant", "narration", "report",
)
#: Length classes by word count: short <= 25 words, medium 26-70, long > 70.
LENGTHS: tuple[str, ...] = ("short", "medium", "long")
#: The longest a ``short`` text may be, in words.
SHORT_MAX_WORDS = 25
#: The shortest a ``long`` text may be, in words (``medium`` lies between).
LONG_MIN_WORDS = 71

_EMOTION_SET = frozenset(EMOTIONS)


def length_class(n_words: int) -> str:
    """The length class of a text of ``n_words`` words (see :data:`LENGTHS`).

    >>> length_class(12), length_class(26), length_class(70), length_class(71)
    ('short', 'medium', 'medium', 'long')
    """
    if n_words <= SHORT_MAX_WORDS:
        return "short"
    return "medium" if n_words < LONG_MIN_WORDS else "long"


@dataclass(frozen=True)
class EvalText:
    """One out-of-style text labelled with the emotion a human reader would see in it."""

    id: str
    emotion: str
    register: str
    length: str
    text: str


@dataclass(frozen=True)
class EvalScenario:
    """A user message to an assistant that implies ``emotion`` without naming it."""

    id: str
    emotion: str
    text: str


@dataclass(frozen=True)
class EvalIntensityTemplate:
    """A sentence with an ``{x}`` slot and the emotions expected to move with ``x``.

    ``values`` are ordered by increasing severity or amount (not necessarily increasing
    numbers: a fire 200 km away comes before one 1 km away). Along that order the emotions in
    ``rises`` are expected to go up and those in ``falls`` to go down, which is what a
    Spearman correlation against the position in ``values`` checks.

    >>> t = EvalIntensityTemplate("intensity.demo", "{x} cups.", (1, 2.5), ("afraid",), ())
    >>> t.texts()
    ['1 cups.', '2.5 cups.']
    """

    id: str
    template: str
    values: tuple[int | float, ...]
    rises: tuple[str, ...]
    falls: tuple[str, ...]

    def texts(self) -> list[str]:
        """The template filled with each value, in the order of :attr:`values`."""
        return [self.template.replace("{x}", _format_value(v)) for v in self.values]

    def expected_signs(self) -> dict[str, int]:
        """``{emotion: +1}`` for each emotion that should rise, ``-1`` for each that falls."""
        return {**{e: 1 for e in self.rises}, **{e: -1 for e in self.falls}}


def _format_value(v: int | float) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


def _known_emotion(where: str, emotion: str) -> str:
    if emotion not in _EMOTION_SET:
        raise CorpusError(f"{where}: unknown emotion {emotion!r} (not one of the 171)")
    return emotion


def _no_leak(where: str, text: str, emotions: list[str] | tuple[str, ...]) -> None:
    leaks = find_emotion_words(text, emotions)
    if leaks:
        named = ", ".join(f"{m.matched!r} ({m.emotion})" for m in leaks)
        raise CorpusError(f"{where}: text names its labelled emotion: {named}")


def load_outofstyle(path: str | Path | None = None) -> list[EvalText]:
    """Read the out-of-style texts (None = the shipped set), in file order.

    Every line is an object with exactly ``id``, ``emotion``, ``register``, ``length`` and
    ``text``. Ids are unique lower-case dotted names, emotions among the 171, registers among
    :data:`REGISTERS`, lengths among :data:`LENGTHS`; no text contains a form of its own
    emotion word. Any problem raises :class:`CorpusError` with one line naming file and line.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "bad.jsonl"
    >>> _ = p.write_text('{"id": "x.1", "emotion": "sad", "register": "diary", '
    ...                  '"length": "short", "text": "So sad today."}\\n')
    >>> try:
    ...     load_outofstyle(p)
    ... except CorpusError as exc:
    ...     print(str(exc).split(": ", 1)[1])
    text names its labelled emotion: 'sad' (sad)
    """
    p = OUTOFSTYLE_PATH if path is None else Path(path)
    seen: set[str] = set()
    out: list[EvalText] = []
    for where, obj in read_jsonl_objects(p, "out-of-style texts"):
        ident, emotion, register, length, text = string_fields(
            where, obj, ("id", "emotion", "register", "length", "text"))
        check_id(where, ident, seen)
        _known_emotion(where, emotion)
        if register not in REGISTERS:
            raise CorpusError(f"{where}: unknown register {register!r} "
                              f"(one of {', '.join(REGISTERS)})")
        if length not in LENGTHS:
            raise CorpusError(f"{where}: unknown length {length!r} (one of {', '.join(LENGTHS)})")
        _no_leak(where, text, [emotion])
        out.append(EvalText(ident, emotion, register, length, text))
    return out


def load_eval_scenarios(path: str | Path | None = None) -> list[EvalScenario]:
    """Read the implicit-emotion scenarios (None = the shipped 12, one per core emotion).

    Every line is an object with exactly ``id``, ``emotion`` and ``text``; the same checks as
    :func:`load_outofstyle` apply (unique ids, known emotion, no form of it in the text).

    >>> [s.id for s in load_eval_scenarios()][-1]
    'scenario.surprised'
    """
    p = SCENARIOS_PATH if path is None else Path(path)
    seen: set[str] = set()
    out: list[EvalScenario] = []
    for where, obj in read_jsonl_objects(p, "evaluation scenarios"):
        ident, emotion, text = string_fields(where, obj, ("id", "emotion", "text"))
        check_id(where, ident, seen)
        _known_emotion(where, emotion)
        _no_leak(where, text, [emotion])
        out.append(EvalScenario(ident, emotion, text))
    return out


def _emotion_list(where: str, obj: dict[str, Any], key: str) -> tuple[str, ...]:
    v = obj[key]
    if not isinstance(v, list) or not all(isinstance(e, str) for e in v):
        raise CorpusError(f"{where}: {key} must be a list of emotion names, got {v!r}")
    if len(set(v)) != len(v):
        raise CorpusError(f"{where}: {key} repeats an emotion: {v!r}")
    return tuple(_known_emotion(where, e) for e in v)


def _values(where: str, v: Any) -> tuple[int | float, ...]:
    if not isinstance(v, list) or len(v) < 3:
        raise CorpusError(f"{where}: values must be a list of at least 3 numbers, got {v!r}")
    for x in v:
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
            raise CorpusError(f"{where}: values must be finite numbers, got {x!r}")
    if len(set(v)) != len(v):
        raise CorpusError(f"{where}: values repeat a number: {v!r}")
    return tuple(v)


def load_intensity_templates(path: str | Path | None = None) -> list[EvalIntensityTemplate]:
    """Read the numerical-intensity templates (None = the shipped 10), in file order.

    Every line is an object with exactly ``id``, ``template`` (a single-line string with one
    ``{x}``), ``values`` (at least 3 distinct finite numbers, in order of increasing severity
    or amount), ``rises`` and ``falls`` (disjoint lists of known emotions, not both empty, none
    named in the template). Any problem raises :class:`CorpusError` naming file and line.

    >>> [len(t.values) for t in load_intensity_templates()][:3]
    [7, 7, 7]
    """
    p = INTENSITY_PATH if path is None else Path(path)
    fields = ("id", "template", "values", "rises", "falls")
    seen: set[str] = set()
    out: list[EvalIntensityTemplate] = []
    for where, obj in read_jsonl_objects(p, "intensity templates"):
        if set(obj) != set(fields):
            raise CorpusError(f"{where}: fields must be {list(fields)}, got {sorted(obj)}")
        ident, template = string_fields(where, {k: obj[k] for k in ("id", "template")},
                                        ("id", "template"))
        check_id(where, ident, seen)
        if template.count("{x}") != 1:
            raise CorpusError(f"{where}: template must contain exactly one '{{x}}' slot")
        values = _values(where, obj["values"])
        rises = _emotion_list(where, obj, "rises")
        falls = _emotion_list(where, obj, "falls")
        if not rises and not falls:
            raise CorpusError(f"{where}: rises and falls are both empty")
        both = sorted(set(rises) & set(falls))
        if both:
            raise CorpusError(f"{where}: {both} both rise and fall")
        _no_leak(where, template.replace("{x}", ""), rises + falls)
        out.append(EvalIntensityTemplate(ident, template, values, rises, falls))
    return out
