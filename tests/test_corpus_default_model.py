"""Corpus generation end to end on the default model (a small slice)."""

from __future__ import annotations

import pytest

from emolens.concepts import find_emotion_words
from emolens.corpus import check_corpus, count_words, generate_corpus, load_corpus

pytestmark = pytest.mark.integration


def test_default_model_writes_a_small_corpus_flagged_exactly_where_it_should(default_lm,
                                                                              tmp_path):
    summary = generate_corpus(default_lm, tmp_path, emotions=["happy", "afraid"], topics=1,
                              per_topic=1, batch_size=4, seed=1, max_new_tokens=80,
                              progress=False)
    corpus = load_corpus(tmp_path)
    records = corpus.records
    assert len(records) == 2 and summary is not None
    assert {r.emotion for r in records} == {"happy", "afraid"}
    for r in records:
        assert r.author == default_lm.name and r.prompt_version and r.sampling
        names = bool(find_emotion_words(r.text, [r.emotion]))
        assert ("names_emotion" in r.flags) == names
        assert ("empty" in r.flags) == (count_words(r.text) < 15)
    # rerunning the same call adds nothing: every work item is already there
    generate_corpus(default_lm, tmp_path, emotions=["happy", "afraid"], topics=1,
                    per_topic=1, batch_size=4, seed=1, max_new_tokens=80, progress=False)
    assert len(load_corpus(tmp_path).records) == 2
    check = check_corpus(corpus, min_per_emotion=1, emotions=["happy", "afraid"])
    # the check reports exactly the records generation flagged, and fails iff any were
    assert {x["id"] for x in check.leaks} == {r.id for r in records if "names_emotion" in r.flags}
    assert set(check.truncated) == {r.id for r in records if "truncated" in r.flags}
    assert check.ok == (not any(r.flags for r in records))
