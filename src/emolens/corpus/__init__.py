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

The package, one job per module (data flows down this list):

- :mod:`~emolens.corpus.records`: :class:`Record`, :class:`Corpus`, chat turns;
- :mod:`~emolens.corpus.textcheck`: cleaning, word counts, shingles, near duplicates, flags;
- :mod:`~emolens.corpus.io`: reading JSONL, :func:`load_corpus`, the curated corpus;
- :mod:`~emolens.corpus.generate`: :func:`generate_corpus` (resumable);
- :mod:`~emolens.corpus.check`: :func:`check_corpus`, :func:`corpus_stats`.

>>> corpus = Corpus([Record(id="story/calm/t000/0", kind="story", emotion="calm", topic=0,
...                         text="She set the kettle on and watched the rain.")])
>>> [r.id for r in corpus.stories()], corpus.emotions()
(['story/calm/t000/0'], ['calm'])
"""

from __future__ import annotations

from emolens.corpus.check import CorpusCheck, check_corpus, corpus_stats, find_duplicates
from emolens.corpus.generate import GenerationSummary, TextGenerator, generate_corpus
from emolens.corpus.io import (
    CURATED_AUTHOR,
    CURATED_PROMPT_VERSION,
    load_corpus,
    load_curated,
    read_jsonl,
    read_records,
)
from emolens.corpus.records import (
    FLAGS,
    KIND_FILES,
    KINDS,
    Corpus,
    Record,
    parse_dialogue,
    render_turns,
)
from emolens.corpus.textcheck import (
    MIN_WORDS,
    NEAR_DUP_JACCARD,
    SHINGLE_N,
    NearDupIndex,
    clean_generated_text,
    count_words,
    emotion_leaks,
    has_final_punctuation,
    jaccard,
    quality_flags,
    shingles,
)

__all__ = [
    "CURATED_AUTHOR",
    "CURATED_PROMPT_VERSION",
    "FLAGS",
    "KINDS",
    "KIND_FILES",
    "MIN_WORDS",
    "NEAR_DUP_JACCARD",
    "SHINGLE_N",
    "Corpus",
    "CorpusCheck",
    "GenerationSummary",
    "NearDupIndex",
    "Record",
    "TextGenerator",
    "check_corpus",
    "clean_generated_text",
    "corpus_stats",
    "count_words",
    "emotion_leaks",
    "find_duplicates",
    "generate_corpus",
    "has_final_punctuation",
    "jaccard",
    "load_corpus",
    "load_curated",
    "parse_dialogue",
    "quality_flags",
    "read_jsonl",
    "read_records",
    "render_turns",
    "shingles",
]
