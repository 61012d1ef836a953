"""The dialogue-probe variant's extraction: chats pooled over the assistant's reply only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_lm

from emolens.cli import main
from emolens.corpus import Corpus, Record, render_turns
from emolens.extract import collect, pooled_features
from emolens.vectors import EmotionVectors

REPLIES = {
    "happy": ["We won the allotment prize and I cannot stop grinning at the ribbon on the gate.",
              "My sister rang with the news and I danced round the kitchen with the kettle."],
    "sad": ["The flat is very quiet now that his coat is gone from the hook by the door.",
            "I kept her last message and read it again on the bus home in the rain."],
}
ASKS = ["Tell me about your day.", "What is on your mind right now?"]


def _chat(emotion: str, k: int, split: str = "train") -> Record:
    turns = [{"role": "user", "content": ASKS[k % 2]},
             {"role": "assistant", "content": REPLIES[emotion][k]}]
    return Record(id=f"story/{emotion}/t000/diary/{k}", kind="story", emotion=emotion, topic=0,
                  text=render_turns(turns), turns=turns, register="diary", split=split)


def _by_hand(lm, record: Record, layers: list[int]) -> np.ndarray:
    """Mean residual over the assistant content tokens, from ``lm.residuals``."""
    enc = lm.encode_chat(record.turns, add_generation_prompt=False)
    start, end = enc.message_tokens[-1]
    assert 0 < start < end < len(enc.input_ids)  # the template's end tokens come after
    res = lm.residuals(lm.pad([enc.input_ids]), layers)
    return np.stack([res[x][0, start:end].float().mean(0).numpy() for x in layers])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_chat_record_is_pooled_over_the_assistant_reply_only(arch):
    lm = tiny_lm(arch)
    layers = [0, 2]
    records = [_chat("happy", 0), _chat("sad", 1)]
    # batched together (different lengths: padding), and with a plain text in the batch
    means, counts, cost = pooled_features(lm, [*records, "A plain text read as before."],
                                          layers, token_skip=50, batch_size=3)
    for i, r in enumerate(records):
        want = _by_hand(lm, r, layers)
        np.testing.assert_allclose(means[i], want, rtol=1e-4, atol=1e-5)
        enc = lm.encode_chat(r.turns, add_generation_prompt=False)
        assert counts[i] == enc.message_tokens[-1][1] - enc.message_tokens[-1][0]
    assert cost.texts == 3 and cost.adapted == 1  # only the plain text had its skip shortened
    plain, _, _ = pooled_features(lm, ["A plain text read as before."], layers, token_skip=50)
    np.testing.assert_allclose(means[2], plain[0], rtol=1e-4, atol=1e-5)


def test_collect_builds_the_variant_from_the_replies():
    lm = tiny_lm("llama")
    records = [_chat(e, k) for e in REPLIES for k in range(2)]
    records.append(Record(id="neutral/0", kind="neutral", text="", turns=[
        {"role": "user", "content": "Two plus two?"}, {"role": "assistant", "content": "4."}]))
    corpus = Corpus(records, source="toy:dialogue", variant="dialogue")
    run = collect(lm, corpus, [1], token_skip=50, dtype=None)
    for j, emotion in enumerate(run.stories.labels):
        want = np.mean([_by_hand(lm, r, [1])[0] for r in records[:4] if r.emotion == emotion],
                       axis=0)
        np.testing.assert_allclose(run.stories.sums[j, 0] / run.stories.counts[j], want,
                                   rtol=1e-4, atol=1e-5)


def test_extract_cli_records_the_variant(tmp_path, monkeypatch, capsys):
    lm = tiny_lm("llama")
    records = [_chat(e, k, split="heldout" if k else "train") for e in REPLIES for k in range(2)]
    records.append(Record(id="neutral/0", kind="neutral", text="", turns=[
        {"role": "user", "content": "Two plus two?"}, {"role": "assistant", "content": "4."}]))
    monkeypatch.setattr("emolens.corpus.load_corpus",
                        lambda spec: Corpus(records, source=spec, variant="dialogue"))
    monkeypatch.setattr("emolens.cli.extract.load_model_from_args", lambda args: lm)
    torch.manual_seed(0)
    out = tmp_path / "v.safetensors"
    assert main(["extract", "--corpus", "default:dialogue", "--out", str(out),
                 "--layers", "1,2"]) == 0
    meta = EmotionVectors.load(out).meta
    assert (meta["corpus"], meta["corpus_variant"], meta["corpus_registers"]) == \
        ("default:dialogue", "dialogue", ["diary"])
