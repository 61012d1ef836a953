"""Extraction pipeline on tiny models: sharding, batching and padding do not change results."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import tiny_lm

from emolens.cli import main
from emolens.corpus import Corpus, Record
from emolens.errors import VectorFileError
from emolens.extract import (
    Extraction,
    collect,
    extract,
    length_batches,
    merge_stats,
    pooled_features,
    vectors_from,
)
from emolens.gguf_io import import_gguf
from emolens.vectors import EmotionVectors

WORDS = {"happy": "sun laugh bright warm glad party", "sad": "rain grey tears alone cold loss",
         "calm": "tea slow quiet soft breath still"}


def toy_corpus() -> Corpus:
    rng = np.random.default_rng(0)
    records = []
    for emotion, words in WORDS.items():
        vocab = words.split()
        for k in range(8):
            text = " ".join(rng.choice(vocab, size=6 + 3 * k)) + "."
            records.append(Record(id=f"story/{emotion}/t{k:03d}/0", kind="story", text=text,
                                  emotion=emotion, topic=k,
                                  split="heldout" if k % 4 == 3 else "train"))
    for k in range(6):
        turns = [{"role": "user", "content": f"What is {k} plus {k}?"},
                 {"role": "assistant", "content": f"The sum is {2 * k}."}]
        records.append(Record(id=f"neutral/{k}", kind="neutral", text="", turns=turns))
    return Corpus(records, "toy")


def test_length_batches_cover_every_index_once():
    batches = length_batches([9, 3, 7, 1, 5], 2)
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]
    assert batches[0] == [3, 1]


def test_batching_and_sorting_do_not_change_pooled_features():
    lm = tiny_lm("llama")
    texts = [r.text for r in toy_corpus().stories()]
    a, na, _ = pooled_features(lm, texts, [0, 2], token_skip=3, batch_size=1)
    b, nb, stats = pooled_features(lm, texts, [0, 2], token_skip=3, batch_size=5,
                                   sort_by_length=True)
    c, _, _ = pooled_features(lm, texts, [0, 2], token_skip=3, batch_size=5,
                              sort_by_length=False, early_exit=False)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a, c, atol=1e-5)
    assert (na == nb).all() and stats.tokens == sum(len(lm.tokenizer(t)["input_ids"])
                                                    for t in texts)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_shards_merge_to_the_single_pass_vectors(tmp_path, arch):
    lm = tiny_lm(arch)
    corpus = toy_corpus()
    layers = [1, 3]
    whole = collect(lm, corpus, layers, token_skip=2, batch_size=4)
    parts = []
    for i in range(3):
        part = collect(lm, corpus, layers, token_skip=2, batch_size=4, shard=(i, 3))
        part.save(tmp_path / f"shard{i}")  # through the files, as a job array would
        parts.append(Extraction.load(tmp_path / f"shard{i}"))
    merged = merge_stats(parts)
    v1 = vectors_from(lm.fingerprint(), whole)
    v2 = vectors_from(lm.fingerprint(), merged)
    np.testing.assert_allclose(v1.directions, v2.directions, atol=1e-5)
    np.testing.assert_allclose(v1.norm_median, v2.norm_median, rtol=1e-6)
    assert whole.stories.counts.sum() == sum(p.stories.counts.sum() for p in parts) == 18


def test_extract_end_to_end_sweeps_layers_and_round_trips(tmp_path):
    lm = tiny_lm("qwen2")
    vecs = extract(lm, toy_corpus(), layers="all", token_skip=2, batch_size=4)
    assert vecs.emotions == ("calm", "happy", "sad")
    scores = vecs.meta["layer_scores"]
    assert set(scores) == {"0", "1", "2", "3"} and vecs.meta["n_heldout"] == 6
    assert vecs.default_layer == vecs.meta["recommended_layer"]
    assert np.isfinite(vecs.norm_median).all() and (vecs.norm_median > 0).all()
    path = vecs.save(tmp_path / "v.safetensors")
    code = ("from emolens.vectors import EmotionVectors as E; import sys; "
            f"v = E.load(r'{path}'); print(len(v), v.default_layer)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["3", str(vecs.default_layer)]
    loaded = EmotionVectors.load(path, expect_model=lm.fingerprint())
    np.testing.assert_array_equal(loaded.directions, vecs.directions)
    np.testing.assert_array_equal(loaded.center, vecs.center)
    with pytest.raises(VectorFileError, match="not for"):
        EmotionVectors.load(path, expect_model=tiny_lm("gpt2").fingerprint())


def test_cli_export_gguf_round_trip(tmp_path):
    lm = tiny_lm("llama")
    vecs = extract(lm, toy_corpus(), layers="all", token_skip=2, batch_size=4, sweep=False)
    path = vecs.save(tmp_path / "v.safetensors")
    out = tmp_path / "calm.gguf"
    assert main(["export", "gguf", "--vectors", str(path), "--emotion", "calm-sad",
                 "--layers", "1,2", "--strength", "0.2", "--out", str(out)]) == 0
    back = import_gguf(out)
    direction = (vecs["calm"] - vecs["sad"]).normalized()
    for layer in (1, 2):
        expected = direction.at(layer) * 0.2 * vecs.residual_scale(layer)
        np.testing.assert_allclose(back[layer], expected, rtol=1e-6)
    assert main(["export", "gguf", "--vectors", str(path), "--emotion", "nope",
                 "--out", str(tmp_path / "x.gguf")]) == 2
