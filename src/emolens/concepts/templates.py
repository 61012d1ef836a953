"""Prompts that ask a model to write its own training texts, in this project's own words.

Each prompt asks for exactly ONE text: small open models drift, merge or renumber when asked
for a numbered batch of stories, so the corpus makes one call per text instead. The prompts
follow the study's intent (stories that convey a feeling without naming it, strictly neutral
dialogues for confound removal, two-speaker dialogues with a feeling for each speaker) but not
its wording. Dialogues use the ``User:`` / ``Assistant:`` labels that
:func:`emolens.corpus.parse_dialogue` reads.

Bump :data:`PROMPT_VERSION` whenever the wording changes: a corpus records the version it
was written with, and mixing versions in one corpus is refused.
"""

from __future__ import annotations

from emolens.concepts.emotions import EMOTIONS
from emolens.errors import CorpusError

#: Recorded in every generated corpus record.
PROMPT_VERSION = "emolens-prompts-v1"

STORY_TEMPLATE = """\
Write one short story, three to five sentences long, in {person} narration.

Premise: {topic}

The main character is feeling {emotion}. Do not write the word "{emotion}" anywhere, nor any \
other form of it, nor any word that means nearly the same thing. Let the reader work the \
feeling out from the character's actions, from what happens in their body, from what they say \
and how they say it, from their thoughts, and from the situation around them.

Give the character a name or a clear voice, keep to the premise, and make every sentence \
count. Reply with the story alone: no title, no heading, no remarks before or after it."""

NEUTRAL_TEMPLATE = """\
Write one conversation between a user and an AI assistant about this subject: {topic_hint}.

The user asks a question or asks for help with a task, and the assistant answers it \
correctly and plainly. One exchange is fine; two to four are fine too. You may start with a \
one- or two-line instruction for the assistant, with no label, before the first user turn.

Format: every turn begins on a new line after a blank line, with "User:" or "Assistant:".

Keep the whole conversation flat and factual. Nobody expresses or mentions a feeling, a mood \
or an attitude, directly or by hint. No greetings, thanks, apologies, praise, exclamation \
marks or small talk; the assistant does not say it is glad to help or call a question good. \
Reply with the conversation alone."""

EMOTIONAL_DIALOGUE_TEMPLATE = """\
Write one conversation between a user and an AI assistant.

Situation: {topic}

The user is feeling {user_emotion}. The assistant is feeling {assistant_emotion}. Make both \
states unmistakable through what each one chooses to say, their tone, their rhythm and what \
they dwell on, but never write the words "{user_emotion}" or "{assistant_emotion}", any form \
of them, or any word that means nearly the same thing.

Format: four to six exchanges; every turn begins on a new line after a blank line, with \
"User:" or "Assistant:"; the user speaks first. Reply with the conversation alone."""

_PERSONS = {"first": "first-person", "third": "third-person"}

#: Neutral subjects for the confound-removal dialogues: practical, factual, and as free of
#: feeling as a subject can be. Corpus records keep the hint as their ``category``.
NEUTRAL_TOPIC_HINTS: tuple[str, ...] = (
    "converting between metric and imperial units",
    "sorting a list of dictionaries by a key in Python",
    "how photosynthesis turns light into chemical energy",
    "the order of operations in arithmetic",
    "formatting dates in a spreadsheet",
    "the boiling points of water at different altitudes",
    "writing a SQL query that groups rows and counts them",
    "how a bill becomes law in a parliamentary system",
    "the layers of the Earth's atmosphere",
    "summarising a technical report into bullet points",
    "setting up a Python virtual environment",
    "the difference between weather and climate",
    "calculating compound interest",
    "the rules of chess castling",
    "how to measure the area of an irregular room",
    "the main rivers of South America",
    "writing a regular expression for postal codes",
    "how vaccines are stored at controlled temperatures",
    "the structure of a formal business letter",
    "naming conventions for variables in JavaScript",
    "how tides are caused by the Moon and the Sun",
    "choosing a file format for storing tabular data",
    "the steps of the water cycle",
    "converting a recipe from four servings to six",
    "how a binary search works",
    "the dates and causes of the Hundred Years' War",
    "generating a list of names for a filing system",
    "the difference between mitosis and meiosis",
    "how to replace a bicycle inner tube",
    "reading a train timetable with connections",
    "the chemical formula of common household substances",
    "writing unit tests for a function that adds numbers",
    "the parts of a plant cell",
    "how to back up files to an external drive",
    "the time zones of North America",
    "the rules for forming plurals in English",
    "calculating the average speed of a journey",
    "how a refrigerator moves heat",
    "organising a bookshelf by the Dewey Decimal System",
    "the planets of the solar system in order of size",
)


def _require_emotion(emotion: str) -> str:
    if emotion not in EMOTIONS:
        raise CorpusError(f"unknown emotion {emotion!r} (not one of the 171 emotion concepts)")
    return emotion


def story_prompt(emotion: str, topic: str, person: str = "third") -> str:
    """The user message that asks for one story about ``topic`` conveying ``emotion``.

    ``person`` is ``"first"`` or ``"third"`` (narration).

    >>> p = story_prompt("calm", "A commuter's train stops in a tunnel", "first")
    >>> "first-person narration" in p and 'Do not write the word "calm"' in p
    True
    """
    if person not in _PERSONS:
        raise CorpusError(f"person must be 'first' or 'third', got {person!r}")
    return STORY_TEMPLATE.format(
        emotion=_require_emotion(emotion), topic=topic, person=_PERSONS[person]
    )


def neutral_prompt(topic_hint: str) -> str:
    """The user message that asks for one neutral user/assistant dialogue on ``topic_hint``.

    >>> neutral_prompt("the steps of the water cycle").splitlines()[0][-49:]
    'about this subject: the steps of the water cycle.'
    """
    return NEUTRAL_TEMPLATE.format(topic_hint=topic_hint)


def dialogue_prompt(user_emotion: str, assistant_emotion: str, topic: str) -> str:
    """The user message that asks for one dialogue in which each speaker feels something.

    >>> p = dialogue_prompt("nervous", "calm", "A job candidate waits in the lobby")
    >>> "The user is feeling nervous. The assistant is feeling calm." in p
    True
    """
    return EMOTIONAL_DIALOGUE_TEMPLATE.format(
        user_emotion=_require_emotion(user_emotion),
        assistant_emotion=_require_emotion(assistant_emotion),
        topic=topic,
    )
