"""Data as code: the 171 emotions, their clusters and word forms, the story topics, prompt
templates, valence/arousal norms and validation scenarios.

>>> from emolens.concepts import EMOTIONS, find_emotion_words
>>> len(EMOTIONS), [m.emotion for m in find_emotion_words("She smiled happily.")]
(171, ['happy'])
"""

from __future__ import annotations

from emolens.concepts.emotions import (
    CORE_EMOTIONS,
    EMOTION_CLUSTERS,
    EMOTIONS,
    EmotionMention,
    cluster_of,
    emotion_word_forms,
    find_emotion_words,
)
from emolens.concepts.norms import AUTHOR_SOURCE, NORMS_PATH, Norms, load_norms
from emolens.concepts.scenarios import (
    FEEL_PROMPTS,
    IMPLICIT_SCENARIOS,
    INTENSITY_EMOTIONS,
    INTENSITY_TEMPLATES,
    SPEAKER_PROMPTS,
    WHAT_HAPPENED_PROMPT,
    FeelPrompt,
    IntensityTemplate,
    Scenario,
    SpeakerPrompt,
)
from emolens.concepts.templates import (
    EMOTIONAL_DIALOGUE_TEMPLATE,
    NEUTRAL_TEMPLATE,
    NEUTRAL_TOPIC_HINTS,
    PROMPT_VERSION,
    STORY_TEMPLATE,
    dialogue_prompt,
    neutral_prompt,
    story_prompt,
)
from emolens.concepts.topics import HELD_OUT_EVERY, TOPICS, is_held_out_topic, story_topic

__all__ = [
    "AUTHOR_SOURCE",
    "CORE_EMOTIONS",
    "EMOTIONAL_DIALOGUE_TEMPLATE",
    "EMOTIONS",
    "EMOTION_CLUSTERS",
    "FEEL_PROMPTS",
    "HELD_OUT_EVERY",
    "IMPLICIT_SCENARIOS",
    "INTENSITY_EMOTIONS",
    "INTENSITY_TEMPLATES",
    "NEUTRAL_TEMPLATE",
    "NEUTRAL_TOPIC_HINTS",
    "NORMS_PATH",
    "PROMPT_VERSION",
    "SPEAKER_PROMPTS",
    "STORY_TEMPLATE",
    "TOPICS",
    "WHAT_HAPPENED_PROMPT",
    "EmotionMention",
    "FeelPrompt",
    "IntensityTemplate",
    "Norms",
    "Scenario",
    "SpeakerPrompt",
    "cluster_of",
    "dialogue_prompt",
    "emotion_word_forms",
    "find_emotion_words",
    "is_held_out_topic",
    "load_norms",
    "neutral_prompt",
    "story_prompt",
    "story_topic",
]
