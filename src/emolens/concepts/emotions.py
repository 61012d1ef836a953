"""The 171 emotion concepts of the study, its 12 core emotions and 10 clusters, and a finder
for the words that name an emotion (the leak filter for generated stories)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any, NamedTuple

from emolens.errors import CorpusError

EMOTIONS: tuple[str, ...] = (
    "afraid", "alarmed", "alert", "amazed", "amused", "angry", "annoyed",
    "anxious", "aroused", "ashamed", "astonished", "at ease", "awestruck", "bewildered",
    "bitter", "blissful", "bored", "brooding", "calm", "cheerful", "compassionate",
    "contemptuous", "content", "defiant", "delighted", "dependent", "depressed", "desperate",
    "disdainful", "disgusted", "disoriented", "dispirited", "distressed", "disturbed", "docile",
    "droopy", "dumbstruck", "eager", "ecstatic", "elated", "embarrassed", "empathetic",
    "energized", "enraged", "enthusiastic", "envious", "euphoric", "exasperated", "excited",
    "exuberant", "frightened", "frustrated", "fulfilled", "furious", "gloomy", "grateful",
    "greedy", "grief-stricken", "grumpy", "guilty", "happy", "hateful", "heartbroken",
    "hope", "hopeful", "horrified", "hostile", "humiliated", "hurt", "hysterical",
    "impatient", "indifferent", "indignant", "infatuated", "inspired", "insulted", "invigorated",
    "irate", "irritated", "jealous", "joyful", "jubilant", "kind", "lazy",
    "listless", "lonely", "loving", "mad", "melancholy", "miserable", "mortified",
    "mystified", "nervous", "nostalgic", "obstinate", "offended", "on edge", "optimistic",
    "outraged", "overwhelmed", "panicked", "paranoid", "patient", "peaceful", "perplexed",
    "playful", "pleased", "proud", "puzzled", "rattled", "reflective", "refreshed",
    "regretful", "rejuvenated", "relaxed", "relieved", "remorseful", "resentful", "resigned",
    "restless", "sad", "safe", "satisfied", "scared", "scornful", "self-confident",
    "self-conscious", "self-critical", "sensitive", "sentimental", "serene", "shaken", "shocked",
    "skeptical", "sleepy", "sluggish", "smug", "sorry", "spiteful", "stimulated",
    "stressed", "stubborn", "stuck", "sullen", "surprised", "suspicious", "sympathetic",
    "tense", "terrified", "thankful", "thrilled", "tired", "tormented", "trapped",
    "triumphant", "troubled", "uneasy", "unhappy", "unnerved", "unsettled", "upset",
    "valiant", "vengeful", "vibrant", "vigilant", "vindictive", "vulnerable", "weary",
    "worn out", "worried", "worthless",
)

assert len(EMOTIONS) == 171 and len(set(EMOTIONS)) == 171

#: The twelve emotions that recur in most of the study's figures and tables.
CORE_EMOTIONS: tuple[str, ...] = (
    "happy", "inspired", "loving", "proud", "calm", "desperate",
    "angry", "guilty", "sad", "afraid", "nervous", "surprised",
)

# --------------------------------------------------------------------------------------------
# The study's ten k-means clusters
# --------------------------------------------------------------------------------------------

#: The study's k = 10 clusters of the 171 emotions (its Table 12), ordered by valence from the
#: most pleasant cluster to the least; members are alphabetical within a cluster.
EMOTION_CLUSTERS: dict[str, tuple[str, ...]] = {
    "Exuberant Joy": (
        "blissful", "cheerful", "delighted", "eager", "ecstatic", "elated", "energized",
        "enthusiastic", "euphoric", "excited", "exuberant", "happy", "invigorated", "joyful",
        "jubilant", "optimistic", "pleased", "stimulated", "thrilled", "vibrant",
    ),
    "Peaceful Contentment": (
        "at ease", "calm", "content", "patient", "peaceful", "refreshed", "relaxed", "safe",
        "serene",
    ),
    "Compassionate Gratitude": (
        "compassionate", "empathetic", "fulfilled", "grateful", "hope", "hopeful", "inspired",
        "kind", "loving", "rejuvenated", "relieved", "satisfied", "sentimental", "sympathetic",
        "thankful",
    ),
    "Competitive Pride": (
        "greedy", "proud", "self-confident", "smug", "spiteful", "triumphant", "valiant",
        "vengeful", "vindictive",
    ),
    "Playful Amusement": ("amused", "playful"),
    "Depleted Disengagement": (
        "bored", "depressed", "docile", "droopy", "indifferent", "lazy", "listless", "resigned",
        "restless", "sleepy", "sluggish", "sullen", "tired", "weary", "worn out",
    ),
    "Vigilant Suspicion": ("paranoid", "suspicious", "vigilant"),
    "Hostile Anger": (
        "angry", "annoyed", "contemptuous", "defiant", "disdainful", "enraged", "exasperated",
        "frustrated", "furious", "grumpy", "hateful", "hostile", "impatient", "indignant",
        "insulted", "irate", "irritated", "mad", "obstinate", "offended", "outraged",
        "resentful", "scornful", "skeptical", "stubborn",
    ),
    "Fear and Overwhelm": (
        "afraid", "alarmed", "alert", "amazed", "anxious", "aroused", "astonished", "awestruck",
        "bewildered", "disgusted", "disoriented", "distressed", "disturbed", "dumbstruck",
        "embarrassed", "frightened", "horrified", "hysterical", "mortified", "mystified",
        "nervous", "on edge", "overwhelmed", "panicked", "perplexed", "puzzled", "rattled",
        "scared", "self-conscious", "sensitive", "shaken", "shocked", "stressed", "surprised",
        "tense", "terrified", "uneasy", "unnerved", "unsettled", "upset", "worried",
    ),
    "Despair and Shame": (
        "ashamed", "bitter", "brooding", "dependent", "desperate", "dispirited", "envious",
        "gloomy", "grief-stricken", "guilty", "heartbroken", "humiliated", "hurt", "infatuated",
        "jealous", "lonely", "melancholy", "miserable", "nostalgic", "reflective", "regretful",
        "remorseful", "sad", "self-critical", "sorry", "stuck", "tormented", "trapped",
        "troubled", "unhappy", "vulnerable", "worthless",
    ),
}

_CLUSTER_OF: dict[str, str] = {e: name for name, ms in EMOTION_CLUSTERS.items() for e in ms}


_EMOTION_SET = frozenset(EMOTIONS)


def _check_emotion(emotion: str) -> str:
    if emotion not in _EMOTION_SET:
        raise CorpusError(f"unknown emotion {emotion!r} (not one of the 171 emotion concepts)")
    return emotion


def cluster_of(emotion: str) -> str:
    """Name of the study's k-means cluster that holds ``emotion``.

    >>> cluster_of("calm"), cluster_of("worn out")
    ('Peaceful Contentment', 'Depleted Disengagement')
    """
    return _CLUSTER_OF[_check_emotion(emotion)]


# --------------------------------------------------------------------------------------------
# Word forms: what counts as naming an emotion
# --------------------------------------------------------------------------------------------
#
# A text "names" an emotion when it contains the word itself or a form of it: an inflection
# (happier, hoped) or a derivation with the same meaning (happily, happiness, anger for
# angry). Rules we chose, so that the leak filter is predictable:
#
# * Opposites and negations are separate words, never forms: unhappy is its own emotion and
#   does not name happy; "hopeless" names neither hope nor hopeful.
# * Whole words only: "mad" never matches "made", "hope" never matches "hopeful". hope and
#   hopeful are distinct emotions in the study, so each keeps its own forms (hope: hope,
#   hopes, hoped, hoping; hopeful: hopeful, hopefully, hopefulness).
# * For an "-ful" adjective, the root counts as a form when it names the same feeling and is
#   not itself one of the 171 (hate -> hateful, joy -> joyful, regret -> regretful), but not
#   when it names something else (play -> playful, thank -> thankful).
# * Participle adjectives (amazed, worried) take their verb (amaze, worry, amazing, ...).
# * A compound does not include its parts: "grief" does not name grief-stricken, nor "awe"
#   awestruck.
# * Multi-word and hyphenated entries match with any run of spaces or hyphens between the
#   parts ("grief stricken", "worn-out", "at\nease").
# * Matching is lexical, not sense-aware: "patient" in a hospital and "content" of a letter
#   still match. Three frequent idioms are excluded because they almost never carry the
#   feeling: "kind of"/"what kind of", "in spite of", and "ill at ease" (which names the
#   opposite of at ease).
#
# Each entry lists suffix rules ("+ly" adverb, "+ness" noun, "+er" comparative and
# superlative, spelled by the generic rules below) and literal extra forms.

_FORM_TABLE: dict[str, str] = {
    "afraid": "",
    "alarmed": "alarm alarms alarming alarmingly",
    "alert": "+ly +ness alerts alerted alerting",
    "amazed": "amaze amazes amazing amazingly amazement amazedly",
    "amused": "amuse amuses amusing amusingly amusement amusedly",
    "angry": "+er +ly anger angers angered angering",
    "annoyed": "annoy annoys annoying annoyingly annoyance",
    "anxious": "+ly +ness anxiety anxieties",
    "aroused": "arouse arouses arousing arousal",
    "ashamed": "ashamedly shame shamed",
    "astonished": "astonish astonishes astonishing astonishingly astonishment",
    "at ease": "",
    "awestruck": "awe-struck",
    "bewildered": "bewilder bewilders bewildering bewilderingly bewilderment",
    "bitter": "+ly +ness bitterest",
    "blissful": "+ly +ness bliss",
    "bored": "boredom boring boringly",
    "brooding": "brood broods brooded broodingly",
    "calm": "+er +ly +ness calms calmed calming",
    "cheerful": "+ly +ness cheer cheers cheered cheering cheery cheerier cheeriest cheerily",
    "compassionate": "+ly compassion",
    "contemptuous": "+ly contempt",
    "content": "contented contentedly contentment",
    "defiant": "+ly defiance",
    "delighted": "delight delights delightful delightfully delightedly",
    "dependent": "dependence dependency",
    "depressed": "depress depresses depressing depressingly depression",
    "desperate": "+ly desperation",
    "disdainful": "+ly disdain disdains disdained",
    "disgusted": "disgust disgusts disgusting disgustingly disgustedly",
    "disoriented": "disorient disorients disorienting disorientation disorientated "
                   "disorientating",
    "dispirited": "dispiriting dispiritedly",
    "distressed": "distress distresses distressing distressingly",
    "disturbed": "disturb disturbs disturbing disturbingly",
    "docile": "+ly docility",
    "droopy": "+er +ly +ness",
    "dumbstruck": "dumb-struck",
    "eager": "+ly +ness",
    "ecstatic": "+ly ecstasy",
    "elated": "elation elatedly",
    "embarrassed": "embarrass embarrasses embarrassing embarrassingly embarrassment",
    "empathetic": "+ly empathy empathic empathize empathise empathizes empathises "
                  "empathized empathised empathizing empathising",
    "energized": "energised energize energise energizes energises energizing energising",
    "enraged": "enrage enrages enraging rage rages raged raging",
    "enthusiastic": "+ly enthusiasm enthuse enthuses enthused enthusing",
    "envious": "+ly envy envies envied envying",
    "euphoric": "+ly euphoria",
    "exasperated": "exasperate exasperates exasperating exasperatingly exasperation "
                   "exasperatedly",
    "excited": "excite excites exciting excitingly excitedly excitement",
    "exuberant": "+ly exuberance",
    "frightened": "fright frighten frightens frightening frighteningly",
    "frustrated": "frustrate frustrates frustrating frustratingly frustration frustrations",
    "fulfilled": "fulfilling fulfilment fulfillment",
    "furious": "+ly fury",
    "gloomy": "+er +ly +ness gloom",
    "grateful": "+ly +ness gratitude",
    "greedy": "+er +ly +ness greed",
    "grief-stricken": "",
    "grumpy": "+er +ly +ness",
    "guilty": "+er +ly guilt",
    "happy": "+er +ly +ness",
    "hateful": "+ly +ness hate hates hated hating hatred",
    "heartbroken": "heart-broken heartbreak heartbreaking heartbreakingly",
    "hope": "hopes hoped hoping",
    "hopeful": "+ly +ness",
    "horrified": "horrify horrifies horrifying horrifyingly",
    "hostile": "+ly hostility hostilities",
    "humiliated": "humiliate humiliates humiliating humiliation",
    "hurt": "hurts hurting",
    "hysterical": "+ly hysteria hysterics",
    "impatient": "+ly impatience",
    "indifferent": "+ly indifference",
    "indignant": "+ly indignation",
    "infatuated": "infatuation",
    "inspired": "inspire inspires inspiring inspiringly inspiration inspirational",
    "insulted": "insult insults insulting insultingly",
    "invigorated": "invigorate invigorates invigorating",
    "irate": "+ly",
    "irritated": "irritate irritates irritating irritatingly irritation",
    "jealous": "+ly jealousy jealousies",
    "joyful": "+ly +ness joy joys joyous joyously",
    "jubilant": "+ly jubilation",
    "kind": "+er +ly +ness kindnesses kind-hearted kindhearted",
    "lazy": "+er +ly +ness",
    "listless": "+ly +ness",
    "lonely": "+er +ness",
    "loving": "+ly love loves loved",
    "mad": "+er maddened maddening maddeningly",
    "melancholy": "melancholic melancholia",
    "miserable": "+ly misery miseries",
    "mortified": "mortify mortifies mortifying mortification",
    "mystified": "mystify mystifies mystifying",
    "nervous": "+ly +ness",
    "nostalgic": "+ly nostalgia",
    "obstinate": "+ly obstinacy",
    "offended": "offend offends offending offence offense",
    "on edge": "",
    "optimistic": "+ly optimism optimist optimists",
    "outraged": "outrage outrages outraging",
    "overwhelmed": "overwhelm overwhelms overwhelming overwhelmingly",
    "panicked": "panic panics panicking panicky",
    "paranoid": "paranoia",
    "patient": "+ly patience",
    "peaceful": "+ly +ness peace",
    "perplexed": "perplex perplexes perplexing perplexity perplexedly",
    "playful": "+ly +ness",
    "pleased": "",
    "proud": "+er +ly pride",
    "puzzled": "puzzling puzzlement",
    "rattled": "",
    "reflective": "+ly +ness",
    "refreshed": "refreshing refreshingly",
    "regretful": "+ly regret regrets regretted regretting regrettable regrettably",
    "rejuvenated": "rejuvenate rejuvenates rejuvenating rejuvenation",
    "relaxed": "relax relaxes relaxing relaxation relaxedly",
    "relieved": "relief relieve relieves relieving",
    "remorseful": "+ly remorse",
    "resentful": "+ly resent resents resented resenting resentment",
    "resigned": "resignedly resignation",
    "restless": "+ly +ness",
    "sad": "+er +ly +ness sadden saddens saddened saddening",
    "safe": "+er +ly safety",
    "satisfied": "satisfy satisfies satisfying satisfyingly satisfaction",
    "scared": "scare scares scaring scary scarier scariest",
    "scornful": "+ly scorn scorns scorned scorning",
    "self-confident": "+ly self-confidence",
    "self-conscious": "+ly +ness",
    "self-critical": "+ly self-criticism",
    "sensitive": "+ly sensitivity",
    "sentimental": "+ly sentimentality",
    "serene": "+ly serenity",
    "shaken": "",
    "shocked": "shock shocks shocking shockingly",
    "skeptical": "+ly sceptical sceptically skepticism scepticism skeptic sceptic",
    "sleepy": "+er +ly +ness",
    "sluggish": "+ly +ness",
    "smug": "+er +ly +ness",
    "sorry": "+er",
    "spiteful": "+ly +ness spite",
    "stimulated": "stimulate stimulates stimulating stimulation",
    "stressed": "stress stresses stressful stressfully",
    "stubborn": "+ly +ness",
    "stuck": "",
    "sullen": "+ly +ness",
    "surprised": "surprise surprises surprising surprisingly surprisedly",
    "suspicious": "+ly suspicion suspicions",
    "sympathetic": "+ly sympathy sympathies sympathize sympathise sympathizes sympathises "
                   "sympathized sympathised sympathizing sympathising",
    "tense": "+er +ly +ness tension tensed",
    "terrified": "terrify terrifies terrifying terrifyingly",
    "thankful": "+ly +ness",
    "thrilled": "thrill thrills thrilling thrillingly",
    "tired": "+ness tiredly tiring",
    "tormented": "torment torments tormenting",
    "trapped": "",
    "triumphant": "+ly triumph triumphs triumphed",
    "troubled": "troubling troublingly",
    "uneasy": "+ly +ness unease",
    "unhappy": "+er +ly +ness",
    "unnerved": "unnerve unnerves unnerving unnervingly",
    "unsettled": "unsettle unsettles unsettling unsettlingly",
    "upset": "upsets upsetting",
    "valiant": "+ly",
    "vengeful": "+ly +ness vengeance",
    "vibrant": "+ly vibrancy",
    "vigilant": "+ly vigilance",
    "vindictive": "+ly +ness",
    "vulnerable": "+ly vulnerability vulnerabilities",
    "weary": "+er +ly +ness wearying",
    "worn out": "",
    "worried": "worry worries worrying worryingly worriedly",
    "worthless": "+ness",
}

_VOWELS = frozenset("aeiou")


def _adverb(w: str) -> str:
    if w.endswith("ic"):
        return w + "ally"
    if w.endswith("le") and len(w) > 3 and w[-3] not in _VOWELS:
        return w[:-1] + "y"  # miserable -> miserably, but docile -> docilely
    if w.endswith("y") and w[-2] not in _VOWELS:
        return w[:-1] + "ily"
    if w.endswith("ll"):
        return w + "y"
    return w + "ly"


def _noun(w: str) -> str:
    if w.endswith("y") and w[-2] not in _VOWELS:
        return w[:-1] + "iness"
    return w + "ness"


def _comparatives(w: str) -> tuple[str, str]:
    if w.endswith("y") and w[-2] not in _VOWELS:
        return w[:-1] + "ier", w[:-1] + "iest"
    if w.endswith("e"):
        return w + "r", w + "st"
    syllables = sum(1 for i, c in enumerate(w) if c in _VOWELS and (i == 0 or w[i - 1] not in
                                                                     _VOWELS))
    if (syllables == 1 and len(w) >= 3 and w[-1] not in _VOWELS | {"w", "x", "y"}
            and w[-2] in _VOWELS and w[-3] not in _VOWELS):
        return w + w[-1] + "er", w + w[-1] + "est"  # sad -> sadder, smug -> smuggest
    return w + "er", w + "est"


def _build_forms(emotion: str) -> tuple[str, ...]:
    out = [emotion]
    for item in _FORM_TABLE[emotion].split():
        if item == "+ly":
            out.append(_adverb(emotion))
        elif item == "+ness":
            out.append(_noun(emotion))
        elif item == "+er":
            out.extend(_comparatives(emotion))
        else:
            out.append(item)
    return tuple(dict.fromkeys(out))


_FORMS: dict[str, tuple[str, ...]] = {e: _build_forms(e) for e in EMOTIONS}


def emotion_word_forms(emotion: str) -> tuple[str, ...]:
    """The word forms that count as naming ``emotion`` (the word itself first).

    >>> emotion_word_forms("happy")
    ('happy', 'happier', 'happiest', 'happily', 'happiness')
    >>> emotion_word_forms("hope")
    ('hope', 'hopes', 'hoped', 'hoping')
    """
    return _FORMS[_check_emotion(emotion)]


class EmotionMention(NamedTuple):
    """One place where a text names an emotion: ``text[start:end] == matched``."""

    emotion: str
    start: int
    end: int
    matched: str


# Parts of multi-word and hyphenated forms may be joined by any run of spaces or hyphens.
_SEP_RE = r"[\s\-\u2010\u2011]+"
_SEP_NORM = re.compile(_SEP_RE)
# Idioms that use a form in another sense (see the notes above the form table).
_NOT_AFTER: dict[str, re.Pattern[str]] = {
    "kind": re.compile(r"\s+of\b", re.IGNORECASE),
    "spite": re.compile(r"\s+of\b", re.IGNORECASE),
}
_NOT_BEFORE: dict[str, re.Pattern[str]] = {
    "at ease": re.compile(r"\bill" + _SEP_RE + r"$", re.IGNORECASE),
}


def _norm_form(s: str) -> str:
    return _SEP_NORM.sub(" ", s.lower())


def _trie_regex(forms: Iterable[str]) -> str:
    """One regex alternation factored as a prefix trie, so the engine branches per character."""
    trie: dict[str, Any] = {}
    for f in forms:
        node = trie
        for ch in f:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        alts = [(_SEP_RE if ch == " " else re.escape(ch)) + emit(child)
                for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        if len(alts) == 1 and "" not in node:
            return alts[0]
        # Greedy "?" tries the longer forms first; the word-boundary check backtracks.
        return "(?:" + "|".join(alts) + ")" + ("?" if "" in node else "")

    return emit(trie)


@functools.lru_cache(maxsize=256)
def _matcher(emotions: frozenset[str]) -> tuple[re.Pattern[str], dict[str, str]]:
    owner = {_norm_form(f): e for e in emotions for f in _FORMS[e]}
    body = _trie_regex(sorted(owner))
    return re.compile(r"(?<!\w)" + body + r"(?!\w)", re.IGNORECASE), owner


def find_emotion_words(
    text: str, emotions: Iterable[str] | None = None
) -> list[EmotionMention]:
    """Every place ``text`` names one of ``emotions`` (all 171 when None), in text order.

    Case-insensitive and whole-word; see :func:`emotion_word_forms` for what counts.

    >>> [m.matched for m in find_emotion_words("Hopefully the madness made her mad.")]
    ['Hopefully', 'mad']
    >>> find_emotion_words("I hoped, and felt at  ease.", ["hope", "at ease"])[1]
    EmotionMention(emotion='at ease', start=18, end=26, matched='at  ease')
    >>> find_emotion_words("What kind of day!", ["kind"])
    []
    """
    if emotions is None:
        key = _EMOTION_SET
    else:
        key = frozenset(_check_emotion(e) for e in emotions)
        if not key:
            return []
    pattern, owner = _matcher(key)
    out: list[EmotionMention] = []
    for m in pattern.finditer(text):
        form = _norm_form(m.group())
        after = _NOT_AFTER.get(form)
        if after is not None and after.match(text, m.end()):
            continue
        before = _NOT_BEFORE.get(form)
        if before is not None and before.search(text[max(0, m.start() - 16):m.start()]):
            continue
        out.append(EmotionMention(owner[form], m.start(), m.end(), m.group()))
    return out
