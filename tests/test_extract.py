"""Extraction pipeline on tiny models: sharding, batching and padding do not change results."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import tiny_lm

from emolens.cli import main
from emolens.corpus import Corpus, Record
from emolens.errors import VectorFileError
from emolens.extract import (
    Extraction,
    StoryStats,
    collect,
    extract,
    length_batches,
    merge_stats,
    pooled_features,
    shard_path,
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
    whole = collect(lm, corpus, layers, token_skip=2, batch_size=4, dtype=None)
    parts = []
    for i in range(3):
        part = collect(lm, corpus, layers, token_skip=2, batch_size=4, shard=(i, 3), dtype=None)
        part.save(tmp_path / f"shard{i}")  # through the files, as a job array would
        parts.append(Extraction.load(tmp_path / f"shard{i}"))
    merged = merge_stats(parts[::-1])  # the order of the shards does not matter
    v1 = vectors_from(whole)
    v2 = vectors_from(merged, model=lm)
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


# --------------------------------------------------------------------------------------------
# shard files that know what they are
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Three shards of the toy corpus on the tiny llama, saved and loaded back."""
    lm = tiny_lm("llama")
    corpus = toy_corpus()
    folder = tmp_path_factory.mktemp("shards")
    paths = []
    for i in range(3):
        part = collect(lm, corpus, [1, 3], token_skip=2, batch_size=4, shard=(i, 3), dtype=None)
        paths.append(part.save(folder / f"run.{i}"))  # dots in a prefix are kept
    whole = collect(lm, corpus, [1, 3], token_skip=2, batch_size=4, dtype=None)
    return lm, paths, whole


def test_shard_file_records_model_corpus_place_and_version(shards):
    lm, paths, whole = shards
    assert [p.name for p in paths] == [f"run.{i}.shard.safetensors" for i in range(3)]
    part = Extraction.load(paths[1])
    assert part.shard == (1, 3) and part.model == lm.fingerprint()
    assert part.corpus_fingerprint == toy_corpus().fingerprint() and part.token_skip == 2
    assert part.split == "train" and part.emotions is None and part.emolens_version
    assert part.stories.layers == (1, 3) and part.neutral is not None
    assert part.source == str(paths[1])
    assert part.corpus == toy_corpus().provenance()  # source, variant, registers
    assert Extraction.load(str(paths[1])[: -len(".shard.safetensors")]).shard == (1, 3)
    with pytest.raises(VectorFileError, match="shard 1/3 only; merge all 3"):
        vectors_from(part)


def test_merge_refuses_missing_duplicated_and_mixed_shards(shards):
    _, paths, whole = shards
    parts = [Extraction.load(p) for p in paths]
    with pytest.raises(VectorFileError, match=r"shard 1/3 is missing \(got 2 of 3 shards"):
        merge_stats([parts[0], parts[2]])
    with pytest.raises(VectorFileError, match=r"shards 1/3, 2/3 are missing"):
        merge_stats(parts[:1])
    with pytest.raises(VectorFileError, match=r"shard 2/3 is given twice \(.*run.2.*run.2"):
        merge_stats([parts[0], parts[1], parts[2], parts[2]])
    with pytest.raises(VectorFileError, match="covers the whole corpus"):
        merge_stats([*parts, whole])
    assert merge_stats([whole]) is whole


def test_merge_refuses_foreign_shards(shards):
    lm, paths, _ = shards
    parts = [Extraction.load(p) for p in paths]
    corpus = toy_corpus()
    other_model = collect(tiny_lm("gpt2"), corpus, [1, 3], token_skip=2, shard=(2, 3))
    other_skip = collect(lm, corpus, [1, 3], token_skip=3, shard=(2, 3))
    other_layers = collect(lm, corpus, [1, 2], token_skip=2, shard=(2, 3))
    smaller = Corpus([r for r in corpus if r.id != "story/sad/t000/0"], "toy")
    other_corpus = collect(lm, smaller, [1, 3], token_skip=2, shard=(2, 3))
    other_n = collect(lm, corpus, [1, 3], token_skip=2, shard=(2, 4))
    cases = [(other_model, "different model (tiny-llama"), (other_skip, "token skip (2 vs 3)"),
             (other_layers, "layers (1, 3 vs 1, 2)"), (other_corpus, "different corpus"),
             (other_n, "different splittings")]
    # the same texts read as the dialogue variant pool other tokens: never mixed
    dialogue = dataclasses.replace(parts[2], corpus={**parts[2].corpus,
                                                     "corpus_variant": "dialogue"})
    cases.append((dialogue, "corpus variant (plain vs dialogue)"))
    for foreign, expect in cases:
        with pytest.raises(VectorFileError) as err:
            merge_stats([parts[0], parts[1], foreign])
        assert expect in str(err.value) and "\n" not in str(err.value)


def test_old_and_incomplete_shards_are_refused_with_a_re_extract_line(shards, tmp_path):
    _, paths, _ = shards
    part = Extraction.load(paths[0])
    # the layout of emolens <= 0.1: PREFIX.stories.safetensors + PREFIX.json, no identity
    part.stories.save(tmp_path / "old.stories.safetensors")
    (tmp_path / "old.json").write_text('{"token_skip": 2, "corpus_fingerprint": "x", '
                                       '"has_neutral": false}')
    for given in (tmp_path / "old", tmp_path / "old.stories.safetensors"):
        with pytest.raises(VectorFileError, match="re-extract it"):
            Extraction.load(given)
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(paths[0]), "np") as f:
        header = json.loads(f.metadata()["emolens"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    for key, value in (("model", None), ("shard", [3, 3]), ("token_skip", "2")):
        broken = dict(header, **{key: value})
        save_file(tensors, str(tmp_path / "broken.safetensors"),
                  metadata={"emolens": json.dumps(broken)})
        with pytest.raises(VectorFileError, match=f"'{key}'.*re-extract it"):
            Extraction.load(tmp_path / "broken.safetensors")
    del header["corpus_fingerprint"]
    save_file(tensors, str(tmp_path / "nocorpus.safetensors"),
              metadata={"emolens": json.dumps(header)})
    with pytest.raises(VectorFileError, match="lacks the field 'corpus_fingerprint'"):
        Extraction.load(tmp_path / "nocorpus.safetensors")
    with pytest.raises(VectorFileError, match="not found"):
        Extraction.load(tmp_path / "nothing")


def test_a_failed_shard_save_leaves_the_old_file(shards, tmp_path, monkeypatch):
    import safetensors.numpy

    _, paths, _ = shards
    old = Extraction.load(paths[0])
    target = old.save(tmp_path / "part")

    def torn(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 100)  # half a file, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save_file", torn)
    newer = Extraction.load(paths[1])
    with pytest.raises(KeyboardInterrupt):
        newer.save(tmp_path / "part")
    monkeypatch.undo()
    assert Extraction.load(target).shard == (0, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.shard.safetensors"]


def test_cli_merge_needs_no_model(shards, tmp_path, monkeypatch, capsys):
    import emolens.cli.extract as cli_extract

    lm, paths, whole = shards

    def no_model(args):
        raise AssertionError("merge loaded a model")

    monkeypatch.setattr(cli_extract, "load_model_from_args", no_model)
    out = tmp_path / "v.safetensors"
    assert main(["extract", "merge", *map(str, paths), "--out", str(out)]) == 0
    merged = EmotionVectors.load(out, expect_model=lm)
    np.testing.assert_allclose(merged.directions, vectors_from(whole).directions, atol=1e-5)
    # the merged file records the corpus as a whole-corpus extraction does
    assert {k: merged.meta[k] for k in ("corpus", "corpus_variant", "corpus_registers")} == \
        toy_corpus().provenance()
    capsys.readouterr()
    assert main(["extract", "merge", str(paths[0]), str(paths[2]), "--out",
                 str(tmp_path / "w.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["emolens: error: shard 1/3 is missing (got 2 of 3 shards: 0/3, 2/3)"]
    assert not (tmp_path / "w.safetensors").exists()


def test_story_stats_in_a_shard_match_the_standalone_file(shards, tmp_path):
    _, paths, _ = shards
    part = Extraction.load(paths[0])
    back = StoryStats.load(part.stories.save(tmp_path / "s.safetensors"))
    np.testing.assert_array_equal(back.sums, part.stories.sums)
    assert shard_path(tmp_path / "x.safetensors") == tmp_path / "x.safetensors"


# --------------------------------------------------------------------------------------------
# memory that does not grow with the corpus
# --------------------------------------------------------------------------------------------


def sized_corpus(per_emotion: int) -> Corpus:
    """``per_emotion`` distinct stories for each of three emotions, plus neutral dialogues."""
    rng = np.random.default_rng(per_emotion)
    records = []
    for emotion, words in WORDS.items():
        vocab = words.split()
        for k in range(per_emotion):
            text = f"Day {k}: " + " ".join(rng.choice(vocab, size=5 + k % 7)) + "."
            records.append(Record(id=f"story/{emotion}/t{k:04d}/0", kind="story", text=text,
                                  emotion=emotion, topic=k % 10,
                                  split="heldout" if k % 4 == 3 else "train"))
    for k in range(per_emotion):
        turns = [{"role": "user", "content": f"What is {k} plus {k + 1}?"},
                 {"role": "assistant", "content": f"It is {2 * k + 1}."}]
        records.append(Record(id=f"neutral/{k:04d}", kind="neutral", text="", turns=turns))
    return Corpus(records, f"sized-{per_emotion}")


def _structures(per_emotion: int, monkeypatch) -> tuple[set, dict, int]:
    """Every array an extraction holds while it runs (name -> shape), and at its end."""
    import emolens.extract.run as run_mod
    from emolens.extract.accumulate import NeutralAccumulator, StoryAccumulator, nbytes

    seen: set[tuple] = set()
    batches = 0

    def spy(cls, method):
        original = getattr(cls, method)

        def wrapped(self, *args, **kwargs):
            nonlocal batches
            out = original(self, *args, **kwargs)
            arrays = self.arrays()
            seen.add((cls.__name__, tuple(sorted((k, tuple(v.shape), str(v.dtype))
                                                 for k, v in arrays.items())),
                      nbytes(arrays)))
            batches += 1
            return out
        monkeypatch.setattr(cls, method, wrapped)

    spy(StoryAccumulator, "add")
    spy(NeutralAccumulator, "end_batch")

    def refuse(*_args, **_kwargs):
        raise AssertionError("an extraction must not keep one row per text")

    monkeypatch.setattr(run_mod, "pooled_features", refuse)  # the [N, L, d] path
    lm = tiny_lm("llama")
    corpus = sized_corpus(per_emotion)
    run = collect(lm, corpus, [0, 1, 2, 3], token_skip=2, batch_size=4, dtype=None)
    vecs = extract(lm, corpus, layers="all", token_skip=2, batch_size=4, dtype=None)
    assert vecs.meta["n_heldout"] == 3 * (per_emotion // 4)
    final = {k: (v.shape, v.dtype) for k, v in run.stories.tensors("stories.").items()}
    final.update({k: (v.shape, v.dtype) for k, v in run.neutral.tensors("neutral.").items()})
    return seen, final, batches


def test_extraction_memory_structure_does_not_grow_with_the_corpus(monkeypatch):
    small_seen, small_final, small_batches = _structures(8, monkeypatch)
    big_seen, big_final, big_batches = _structures(32, monkeypatch)
    assert big_batches > 3 * small_batches  # four times the texts went through
    # the same arrays, of the same shapes and bytes, after every batch, whatever the corpus
    assert small_seen == big_seen and len(small_seen) == 2
    assert small_final == big_final
    assert not any("token_norms" in k for k in big_final)


def test_neutral_scatter_in_float32_matches_a_float64_two_pass_reference():
    from emolens.extract.accumulate import NeutralAccumulator

    rng = np.random.default_rng(0)
    # a large common offset (as residual streams have) over small variation: the naive
    # sum-of-outer-products formula would lose the variance in float32
    acts = (rng.normal(size=(3000, 8)) + 300.0).astype(np.float32)
    acc = NeutralAccumulator([5], d=8)  # float32 scatter
    for chunk in np.array_split(np.arange(3000), 17):
        acc.add_layer(5, torch.from_numpy(acts[chunk]))
        acc.end_batch(len(chunk))
    cov = acc.to_stats().covariance(0)
    np.testing.assert_allclose(cov, np.cov(acts.astype(np.float64).T, bias=True), atol=2e-4)
    median = acc.to_stats().norm_stats()[1][0]
    np.testing.assert_allclose(median, np.median(np.linalg.norm(acts, axis=1)), rtol=3e-3)


def test_neutral_stats_of_the_first_layout_are_converted(tmp_path):
    from emolens import fileformat
    from emolens.extract import NeutralStats

    rng = np.random.default_rng(1)
    acts = rng.normal(size=(2, 50, 4)) * 3.0
    norms = np.linalg.norm(acts, axis=2).astype(np.float32)
    old = {"sum": acts.sum(1), "sum_outer": np.einsum("lni,lnj->lij", acts, acts),
           "token_norms": norms}
    path = fileformat.write(tmp_path / "n.safetensors", fileformat.KIND_NEUTRAL,
                            {"layers": [1, 2], "n_tokens": 50}, old)
    ns = NeutralStats.load(path)
    fresh = NeutralStats.empty([1, 2], 4)
    fresh.add_tokens(acts)
    np.testing.assert_allclose(ns.covariance(1), fresh.covariance(1), atol=1e-9)
    np.testing.assert_array_equal(ns.norm_hist, fresh.norm_hist)
    np.testing.assert_allclose(ns.norm_stats()[0], norms.mean(1), rtol=1e-6)


def test_bf16_pass_runs_on_a_cast_copy_and_leaves_the_model_alone():
    lm = tiny_lm("llama")
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    corpus = toy_corpus()
    fp32 = collect(lm, corpus, [1, 3], token_skip=2, batch_size=4, dtype=None)
    bf16 = collect(lm, corpus, [1, 3], token_skip=2, batch_size=4, dtype="bfloat16")
    assert lm.dtype == torch.float32
    for k, v in lm.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    a, b = fp32.stories.means(), bf16.stories.means()
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert cos.min() > 0.999
    assert bf16.model == fp32.model
