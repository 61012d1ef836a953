"""Data-parallel extraction: 2 CPU processes (gloo, launched by torchrun) equal one process."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_extract import toy_corpus

from emolens.extract import Extraction, collect, extract
from emolens.testing import tiny_lm
from emolens.vectors import EmotionVectors

WORKER = textwrap.dedent('''
    """One rank of a data-parallel extraction over the tiny Llama and a toy corpus."""
    import json
    import sys
    from pathlib import Path

    import numpy as np
    import torch

    from emolens.corpus import Corpus, Record

    LAYERS = [1, 3]
    WORDS = {"happy": "sun laugh bright warm glad party",
             "sad": "rain grey tears alone cold loss",
             "calm": "tea slow quiet soft breath still"}


    def toy_corpus():
        rng = np.random.default_rng(0)
        records = []
        for emotion, words in WORDS.items():
            vocab = words.split()
            for k in range(10):
                text = f"Day {k}: " + " ".join(rng.choice(vocab, size=6 + 3 * k)) + "."
                records.append(Record(id=f"story/{emotion}/t{k:03d}/0", kind="story",
                                      text=text, emotion=emotion, topic=k,
                                      split="heldout" if k % 4 == 3 else "train"))
        for k in range(7):
            turns = [{"role": "user", "content": f"What is {k} plus {k}?"},
                     {"role": "assistant", "content": f"The sum is {2 * k}, I think."}]
            records.append(Record(id=f"neutral/{k}", kind="neutral", text="", turns=turns))
        return Corpus(records, "toy")


    if __name__ == "__main__":
        from emolens.extract import extract, shard_of
        from emolens.extract.distributed import collect_distributed, init_distributed
        from emolens.testing import tiny_lm

        out = Path(sys.argv[1])
        ctx = init_distributed()
        torch.set_num_threads(1)
        lm = tiny_lm("llama")
        corpus = toy_corpus()
        run = collect_distributed(lm, corpus, LAYERS, token_skip=2, batch_size=3, dtype=None)
        vecs = extract(lm, corpus, layers=LAYERS, token_skip=2, batch_size=3, dtype=None)
        mine = len(shard_of(corpus.stories(), (ctx.rank, ctx.world_size)))
        (out / f"rank{ctx.rank}.json").write_text(json.dumps(
            {"rank": ctx.rank, "world": ctx.world_size, "backend": ctx.backend,
             "my_stories": mine, "texts": run.story_pass.texts}))
        if ctx.rank == 0:
            run.save(out / "dist")
            vecs.save(out / "dist.vectors.safetensors")
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
''')


def _load_worker(path):
    spec = importlib.util.spec_from_file_location("emolens_dist_worker", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_two_gloo_ranks_give_the_single_process_statistics_and_vectors(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc_per_node", "2", str(script), str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["backend"] for r in ranks] == ["gloo", "gloo"]
    worker = _load_worker(script)
    corpus = worker.toy_corpus()
    lm = tiny_lm("llama")
    one = collect(lm, corpus, worker.LAYERS, token_skip=2, batch_size=3, dtype=None)
    # each rank read its share only; the reduced pass covers the whole train split
    assert sum(r["my_stories"] for r in ranks) == len(corpus.stories())
    assert all(r["my_stories"] < len(corpus.stories()) for r in ranks)
    assert ranks[0]["texts"] == ranks[1]["texts"] == one.story_pass.texts

    dist = Extraction.load(tmp_path / "dist")
    assert dist.shard is None and dist.model == one.model
    assert dist.corpus_fingerprint == one.corpus_fingerprint
    np.testing.assert_array_equal(dist.stories.counts, one.stories.counts)
    np.testing.assert_array_equal(dist.stories.token_counts, one.stories.token_counts)
    np.testing.assert_allclose(dist.stories.sums, one.stories.sums, rtol=1e-6, atol=1e-6)
    assert dist.neutral.n_tokens == one.neutral.n_tokens
    np.testing.assert_allclose(dist.neutral.mean, one.neutral.mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dist.neutral.m2, one.neutral.m2, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(dist.neutral.norm_hist, one.neutral.norm_hist)
    np.testing.assert_array_equal(dist.scatter.counts, one.scatter.counts)
    np.testing.assert_allclose(dist.scatter.scatter, one.scatter.scatter, rtol=1e-6, atol=1e-5)

    v_dist = EmotionVectors.load(tmp_path / "dist.vectors.safetensors")
    v_one = extract(lm, corpus, layers=worker.LAYERS, token_skip=2, batch_size=3, dtype=None)
    np.testing.assert_allclose(v_dist.directions, v_one.directions, atol=1e-5)
    np.testing.assert_allclose(v_dist.norm_median, v_one.norm_median, rtol=1e-6)
    assert v_dist.head.meta["shrinkage"] == v_one.head.meta["shrinkage"]
    np.testing.assert_allclose(v_dist.head.weight, v_one.head.weight, rtol=1e-3, atol=1e-3)
    assert v_dist.meta["n_heldout"] == v_one.meta["n_heldout"] == 6
    assert v_dist.meta["layer_scores"] == v_one.meta["layer_scores"]


def test_without_a_process_group_distributed_collect_is_plain_collect():
    from emolens.extract.distributed import collect_distributed, context, init_distributed

    assert context() is None
    ctx = init_distributed("gloo")  # no WORLD_SIZE in the environment: one rank, no group
    assert (ctx.rank, ctx.world_size) == (0, 1) and context() is None
    lm = tiny_lm("llama")
    a = collect_distributed(lm, toy_corpus(), [1], token_skip=2, batch_size=4, dtype=None)
    b = collect(lm, toy_corpus(), [1], token_skip=2, batch_size=4, dtype=None)
    np.testing.assert_array_equal(a.stories.sums, b.stories.sums)
    with pytest.raises(Exception, match="no torch.distributed process group"):
        extract(lm, toy_corpus(), layers=[1], token_skip=2, distributed=True)
