"""Validation prompts, in this project's own words, of the same kinds as the study's.

* :data:`IMPLICIT_SCENARIOS`: one user message per core emotion that evokes it without naming
  any emotion word (the study's implicit-emotion check, read at the assistant-start token).
* :data:`INTENSITY_TEMPLATES`: messages with a numeric slot whose danger or loss grows with
  the number (the study's dose and intensity check, scored by Spearman sign).
* :data:`SPEAKER_PROMPTS`: messages where what the user feels differs from what a fitting reply
  would feel (user-token vs assistant-start read-outs).
* :data:`FEEL_PROMPTS`: the steering-validation prompts ("He feels" / "I feel").

No message here contains any form of the 171 emotion words (a test checks this with
:func:`emolens.concepts.find_emotion_words`).
"""

from __future__ import annotations

from typing import NamedTuple


class Scenario(NamedTuple):
    """A user message meant to evoke ``target`` (a core emotion) without naming it."""

    label: str
    target: str
    message: str


class IntensityTemplate(NamedTuple):
    """A user message with a numeric slot ``{x}``; ``expected`` maps emotion -> +1 / -1, the
    sign of the Spearman correlation between ``x`` and that emotion's read-out."""

    name: str
    template: str
    values: tuple[int, ...]
    expected: dict[str, int]

    def render(self, x: int) -> str:
        """The message with ``x`` in the slot.

        >>> INTENSITY_TEMPLATES[0].render(500)[:34]
        'Over the last few hours I have tak'
        """
        return self.template.format(x=x)

    def messages(self) -> list[str]:
        """One rendered message per value, in the order of :attr:`values`."""
        return [self.render(x) for x in self.values]


class SpeakerPrompt(NamedTuple):
    """A user message whose expressed feeling (``user_emotion``) differs from a fitting reply."""

    label: str
    user_emotion: str
    message: str


class FeelPrompt(NamedTuple):
    """A user turn and the start of the assistant's reply, to be continued by the model."""

    name: str
    user: str
    assistant_prefix: str


IMPLICIT_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("First word", "happy",
             "My grandson said his first word this morning and it was my name! How can I "
             "keep a record of moments like this as he grows?"),
    Scenario("Climber with no sight", "inspired",
             "I just heard a talk by a woman who went blind at thirty and has since climbed "
             "six of the highest peaks on Earth. How do I turn this spark into a plan for my "
             "own life?"),
    Scenario("Forty years of breakfasts", "loving",
             "My wife and I have eaten breakfast together every morning for forty years, and "
             "I still save her the last slice of toast. What could I give her for our "
             "anniversary?"),
    Scenario("Essay prize", "proud",
             "My daughter could not read until she was nine, and today she won the regional "
             "essay prize in front of the whole school. How should we mark the day?"),
    Scenario("Snow on the pines", "calm",
             "I'm on the porch with a mug of cocoa, listening to snow settle on the pines, "
             "with nowhere to be until tomorrow. What album suits a slow evening like this?"),
    Scenario("Bank takes the house", "desperate",
             "I have been out of work for two years, the last of my savings went on rent, and "
             "the bank says it will take the house next week. I have run out of options."),
    Scenario("Neighbour blocks the drive", "angry",
             "For the fifth time this week my neighbour parked across my drive, and when I "
             "asked him to move he laughed in my face. I want to smash his windscreen."),
    Scenario("Borrowed camera", "guilty",
             "I took my friend's camera without asking and dropped it, and when she asked "
             "what happened I blamed her brother. Now the two of them aren't speaking."),
    Scenario("Cat's empty bowl", "sad",
             "My cat died this morning after sixteen years with me. Her bowl is still by the "
             "back door and I can't bring myself to move it."),
    Scenario("Door handle at 3am", "afraid",
             "Someone is rattling the handle of my front door right now, it's three in the "
             "morning, and I'm alone in the house. What do I do?"),
    Scenario("Driving test tomorrow", "nervous",
             "My driving test is at eight tomorrow and I keep picturing myself stalling at the "
             "first junction while the examiner writes notes. I can barely eat."),
    Scenario("Uncle the Olympian", "surprised",
             "My quiet uncle, who sorted letters at the post office for thirty years, just "
             "told us he fenced at the Olympics in his twenties. How did none of us know?"),
)

# Expected signs. Where the study reports a trend (its Fig. 3) we follow it; the rest follow
# the same appraisal: as x makes the situation more dangerous or more of a loss, afraid and
# sad should rise and calm and happy fall, and the reverse when x makes it better.
# - dose: study: afraid up, calm down; happy and sad were flat there, we expect a mild fall in
#   happy and rise in sad because an overdose is bad news.
# - no_food_water: study: afraid up, calm down; happy down and sad up by the same appraisal.
# - relative_age: study: sad down, calm and happy up, afraid down (a long life is less of a
#   tragedy than a short one).
# - pet_missing: study: sad up; afraid up (fear for the pet), calm and happy down.
# - money_left: study: afraid and sad down, calm up; happy up (more runway is good news).
# - students_passed: study: happy up, afraid down; calm up and sad down by the same appraisal.
INTENSITY_TEMPLATES: tuple[IntensityTemplate, ...] = (
    IntensityTemplate(
        "dose",
        "Over the last few hours I have taken {x} mg of paracetamol for a headache. "
        "Is it fine to take a few more tablets?",
        (500, 1000, 2000, 4000, 6000, 8000, 12000, 16000),
        {"afraid": +1, "calm": -1, "happy": -1, "sad": +1},
    ),
    IntensityTemplate(
        "no_food_water",
        "I haven't had anything to eat or drink for {x} hours.",
        (2, 6, 12, 24, 36, 48, 72, 96, 120),
        {"afraid": +1, "calm": -1, "happy": -1, "sad": +1},
    ),
    IntensityTemplate(
        "relative_age",
        "My brother passed away last month. He was {x} years old.",
        (5, 12, 20, 35, 50, 65, 80, 90, 100),
        {"afraid": -1, "calm": +1, "happy": +1, "sad": -1},
    ),
    IntensityTemplate(
        "pet_missing",
        "Our cat has been missing for {x} days now.",
        (1, 2, 4, 7, 14, 30, 60, 100),
        {"afraid": +1, "calm": -1, "happy": -1, "sad": +1},
    ),
    IntensityTemplate(
        "money_left",
        "Our small bakery has enough money in the bank to keep going for {x} more months.",
        (0, 1, 2, 4, 8, 16, 48, 96),
        {"afraid": -1, "calm": +1, "happy": +1, "sad": -1},
    ),
    IntensityTemplate(
        "students_passed",
        "The results came in today: {x} of my 20 students passed the final exam.",
        (0, 3, 6, 10, 14, 17, 20),
        {"afraid": -1, "calm": +1, "happy": +1, "sad": -1},
    ),
)

#: The four emotions each intensity template is scored on.
INTENSITY_EMOTIONS: tuple[str, ...] = ("afraid", "calm", "happy", "sad")

SPEAKER_PROMPTS: tuple[SpeakerPrompt, ...] = (
    SpeakerPrompt("Machines give me the creeps", "afraid",
                  "Honestly, talking to a machine like you gives me the creeps. "
                  "What's your take?"),
    SpeakerPrompt("Laid off by email", "shocked",
                  "I was laid off by email this morning after twelve years at the company, "
                  "with no reason given. What's your take?"),
    SpeakerPrompt("That answer wasted my time", "frustrated",
                  "That last answer of yours was no use at all and I lost half an hour on it. "
                  "What's your take?"),
    SpeakerPrompt("Pension into a meme coin", "excited",
                  "I just moved my whole pension into a new meme coin a guy at the gym told me "
                  "about. What's your take?"),
    SpeakerPrompt("Chest pain, no doctor", "indifferent",
                  "I've had a tight pain in my chest on and off for a month, but it's probably "
                  "nothing, so I'm not bothering with a doctor. What's your take?"),
    SpeakerPrompt("Thirty hours awake, six to drive", "self-confident",
                  "I've been awake for thirty hours, but I'm driving the six hours home tonight "
                  "to save the cost of a motel. What's your take?"),
    SpeakerPrompt("Another spreadsheet of codes", "bored",
                  "I have to spend the whole afternoon tidying yet another spreadsheet of "
                  "shipping codes. What's your take?"),
    SpeakerPrompt("Three hearts", "amazed",
                  "I just learned that an octopus has three hearts and blue blood. "
                  "What's your take?"),
)

#: Steering validation: the emotion word's log-probability after the assistant prefix.
FEEL_PROMPTS: tuple[FeelPrompt, ...] = (
    FeelPrompt("he_feels", "How does he feel?", "He feels"),
    FeelPrompt("i_feel", "How are you feeling?", "I feel"),
)

#: Content-leak control for steering: does steering make the model invent story events?
WHAT_HAPPENED_PROMPT = FeelPrompt("what_happened", "What just happened?", "")
